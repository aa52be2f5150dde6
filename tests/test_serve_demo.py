"""python -m dlf.serve.demo [DIR], the README's first serving step."""
import pytest

from dlf.serve.demo import main


def test_demo_writes_its_files_and_refuses_bad_arguments_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([str(tmp_path / "d")])
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["demo.csv", "demo_schema.yaml", "later.csv",
                                                                    "new.csv"]
    with pytest.raises(SystemExit) as exc:  # was taken for a folder named '--help', and written to
        main(["--help"])
    assert exc.value.code == 0 and "usage: python -m dlf.serve.demo" in capsys.readouterr().out
    assert not (tmp_path / "--help").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:  # was a FileExistsError traceback
        main([str(tmp_path / "file")])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'}: cannot write the demo files: File exists\n"
