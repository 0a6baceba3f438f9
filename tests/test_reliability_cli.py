"""Bad input to every verb: one clear line, the documented exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import VAULTFS_BIN, VaultDir, cli_env, run_cli, write_passfile
from tests.terminal import on_terminal

VERBS_AND_MISSING = {
    "init": [],
    "info": [],
    "passwd": [],
    "recover": [],
    "mount": ["BACKING_ONLY"],
    "lock": [],
    "unmount": [],
    "export": ["BACKING_ONLY"],
    "import": ["BACKING_ONLY"],
    "ls": [],
    "cat": ["BACKING_ONLY"],
    "fsck": [],
    "conflicts": [],
}


def one_line(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("verb", sorted(VERBS_AND_MISSING))
def test_missing_arguments(verb: str, vault_dir: VaultDir) -> None:
    args = [str(vault_dir.path) if a == "BACKING_ONLY" else a for a in VERBS_AND_MISSING[verb]]
    one_line(run_cli(verb, *args), 2, "required")


def test_unknown_verb_and_option() -> None:
    one_line(run_cli("frobnicate"), 2, "invalid choice")
    one_line(run_cli("info", "x", "--bogus"), 2, "unrecognized arguments")
    one_line(run_cli("mount", "a", "b", "--idle", "soon"), 2, "invalid duration")
    one_line(run_cli("init", "x", "--kdf-time", "zero"), 2, "positive integer")


@pytest.mark.parametrize("verb", ["info", "passwd", "recover", "export", "import", "ls", "cat", "fsck", "conflicts",
                                  "mount"])
def test_backing_dir_missing_or_a_file(tmp_path: Path, verb: str) -> None:
    passfile = write_passfile(tmp_path / "p", "pw")
    (tmp_path / "file").write_text("x")
    (tmp_path / "mnt").mkdir()
    extra = {"export": [str(tmp_path / "out")], "import": [str(tmp_path)], "cat": ["/x"],
             "mount": [str(tmp_path / "mnt")]}
    for backing in (tmp_path / "absent", tmp_path / "file"):
        args = [verb, str(backing), *extra.get(verb, [])]
        if verb == "recover":
            args += ["--recovery-key-file", str(passfile)]
        elif verb != "info":
            args += ["--passfile", str(passfile)]
        result = run_cli(*args)
        one_line(result, 5, str(backing))


def test_mountpoint_that_is_a_file_or_missing(vault_dir: VaultDir, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    one_line(run_cli("mount", str(vault_dir.path), str(tmp_path / "afile"), "--passfile", str(vault_dir.passfile)),
             10, "not a directory")
    one_line(run_cli("mount", str(vault_dir.path), str(tmp_path / "nowhere"), "--passfile", str(vault_dir.passfile)),
             10, "does not exist")


def test_bad_password_files(vault_dir: VaultDir, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    unreadable = tmp_path / "dir-not-file"
    unreadable.mkdir()
    for verb_args in (["passwd", str(vault_dir.path)], ["ls", str(vault_dir.path)], ["fsck", str(vault_dir.path)]):
        one_line(run_cli(*verb_args, "--passfile", str(empty)), 2, "empty password")
        one_line(run_cli(*verb_args, "--passfile", str(unreadable)), 2, "cannot read")
        one_line(run_cli(*verb_args), 2, "no terminal", "--passfile -")
        one_line(run_cli(*verb_args, "--passfile", "-", input=""), 2, "standard input ended")


def run_on_terminal(args: list[str], answer: bytes, prompt: bytes) -> tuple[int, str]:
    """Run the CLI with a pty as its controlling terminal; type ``answer`` at ``prompt``."""
    return on_terminal(VAULTFS_BIN, args, cli_env(), [(prompt, answer)], timeout=30)


def test_ctrl_c_at_the_password_prompt(vault_dir: VaultDir) -> None:
    code, output = run_on_terminal(["passwd", str(vault_dir.path)], b"\x03", b"Current password:")
    assert code == 130, output
    assert "Traceback" not in output
    assert "vaultfs: interrupted" in output


def test_password_typed_on_the_terminal_works(vault_dir: VaultDir) -> None:
    code, output = run_on_terminal(["ls", str(vault_dir.path)], vault_dir.password.encode() + b"\n",
                                   b"Password:")
    assert code == 0, output
    assert vault_dir.password not in output  # no echo
