"""Output files: written through symbolic links, never over devices or fifos, with the user's umask, atomically."""
import json
import os
import stat

import pytest

from explain_mnist import results
from explain_mnist.errors import UserError


@pytest.fixture
def umask():
    """Set the process's umask for one test, and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask):
        os.umask(mask)
    yield set_mask
    os.umask(saved)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_through_a_symlink_changes_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "data" / "r.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    results.write_json(link, {"a": 1})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["data", "link.json"]   # the temporary file was beside the target
    assert os.listdir(target.parent) == ["r.json"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    results.write_json(link, [1, 2])
    assert link.is_symlink() and json.loads((tmp_path / "new.json").read_text()) == [1, 2]


@pytest.mark.parametrize("special", ["fifo", "device"])
def test_special_files_are_refused_and_left_alone(tmp_path, special):
    if special == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = "/dev/null"
    before = os.stat(path)
    for check in (lambda: results.check_output(path, f"--json {path}"), lambda: results.write_json(path, {})):
        with pytest.raises(UserError, match="not a regular file") as info:
            check()
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    after = os.stat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)


def test_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "r.json"
    link.symlink_to("/dev/null")
    with pytest.raises(UserError, match="device"):
        results.write_json(link, {})
    assert link.is_symlink()


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    umask(0o022)
    results.write_json(tmp_path / "a.json", {})
    assert mode(tmp_path / "a.json") == 0o644
    umask(0o077)
    results.write_json(tmp_path / "b.json", {})
    assert mode(tmp_path / "b.json") == 0o600
    assert results.user_umask() == 0o077
    os.chmod(tmp_path / "a.json", 0o640)
    results.write_json(tmp_path / "a.json", {"again": True})
    assert mode(tmp_path / "a.json") == 0o640 and json.loads((tmp_path / "a.json").read_text()) == {"again": True}


def test_dash_writes_json_to_stdout(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results.check_output("-")
    assert results.write_json("-", {"x": [1.5]}) is None
    assert json.loads(capsys.readouterr().out) == {"x": [1.5]}
    assert os.listdir(tmp_path) == []   # no file named "-"


def test_check_output_names_the_path_and_the_reason(tmp_path):
    (tmp_path / "plain").write_text("")
    cases = {
        "/proc/nope/r.json": "cannot create the folder /proc/nope",
        str(tmp_path / "plain" / "r.json"): f"{tmp_path / 'plain'} is a file, not a folder",
        str(tmp_path / "plain" / "deeper" / "r.json"): f"{tmp_path / 'plain'} is a file, not a folder",
        str(tmp_path): "is a folder",
    }
    for path, reason in cases.items():
        with pytest.raises(UserError) as info:
            results.check_output(path, f"--json {path}")
        message = str(info.value)
        assert message.startswith(f"--json {path}") and reason in message and "\n" not in message, message


def test_check_output_creates_nothing(tmp_path):
    path = tmp_path / "new" / "deeper" / "r.json"
    results.check_output(path)
    assert os.listdir(tmp_path) == []
    results.write_json(path, {"a": 1})   # the write itself creates the folders
    assert json.loads(path.read_text()) == {"a": 1}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot (write in|create)"):
            results.check_output(folder / "r.json", "--json r.json")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("name, fmt", [("f.png", "png"), ("f.PDF", "pdf"), ("f.svg", "svg")])
def test_figure_format_from_the_suffix(name, fmt):
    assert results.figure_format(name) == fmt


@pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.gz"])
def test_other_figure_suffixes_are_refused_with_the_supported_list(name):
    with pytest.raises(UserError, match=r"supported: \.png, \.pdf, \.svg"):
        results.figure_format(name)
