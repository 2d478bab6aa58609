import json
import os

from conftest import tiny_config, write_job, write_prompts

from pipeline.cli import main


def write_cfg(tmp_path, **kw):
    src = write_prompts(tmp_path / "p.parquet", [f"prompt {i}" for i in range(5)], group=list("ababa"))
    cfg = tiny_config(src, tmp_path / "out", **kw)
    return write_job(tmp_path / "job.yaml", cfg)


def test_plan_run_status_verify(tmp_path, capsys):
    cfg = write_cfg(tmp_path, generation={"batch_size": 1})
    assert main(["plan", cfg, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == {**plan, "files": 1, "rows": 5, "shards": 2, "images": 10, "committed_shards": 0}

    assert main(["run", cfg, "--no-progress", "--set", "generation.images_per_prompt=2"]) == 0
    out = capsys.readouterr().out
    assert "complete    yes" in out and "rows        10 total" in out

    assert main(["plan", cfg, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["committed_shards"] == 2 and plan["committed_images"] == 10 and plan["pending_shards"] == 0

    assert main(["status", str(tmp_path / "out")]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["rows"] == 10 and st["success"] and st["status_counts"]["ok"] == 10

    assert main(["verify", str(tmp_path / "out"), "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "3/3 byte-identical; max pixel difference 0/255" in out


def test_verify_reports_pixel_difference_when_bytes_differ(tmp_path, capsys):
    cfg = write_cfg(tmp_path, generation={"batch_size": 4})
    assert main(["run", cfg, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "out"), "--n", "4", "--batch-size", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    diff = int(last.split("max pixel difference ")[1].split("/")[0])
    assert diff <= 2


def test_errors_exit_2_with_message(tmp_path, capsys):
    cfg = write_cfg(tmp_path)
    assert main(["run", cfg, "--set", "generation.width=13"]) == 2
    err = capsys.readouterr().err
    assert "generation.width" in err and "13" in err
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert not os.path.exists(tmp_path / "out")


def test_audit_defaults_must_name_input_columns(tmp_path, capsys):
    """audit.group_by / audit.where name the input's own columns and audit.attributes probed ones,
    checked before any work (exit 2)."""
    cfg = write_cfg(tmp_path)
    assert main(["run", cfg, "--set", "audit.group_by=[phash]"]) == 2
    err = capsys.readouterr().err
    assert "audit.group_by: 'phash' is not a column of the input" in err and err.count("\n") == 1
    assert main(["run", cfg, "--set", "audit.where=[nosuch=1]"]) == 2
    assert "audit.where: 'nosuch'" in capsys.readouterr().err
    assert main(["run", cfg, "--set", "audit.where=[group]"]) == 2
    assert "COLUMN=VALUE" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
    # audit.attributes: attributes of the sets this run probes (the tiny model probes none by default)
    assert (
        main(["run", cfg, "--set", "audit.attributes=[colour]", "--set", "probes.attributes=[toyworld]"]) == 0
    )
    assert main(["run", cfg, "--set", "audit.attributes=[hue]", "--set", "probes.attributes=[toyworld]"]) == 2
    err = capsys.readouterr().err
    assert "audit.attributes: 'hue' is not an attribute this run probes" in err and "'colour', 'shape'" in err
    assert main(["run", cfg, "--set", "audit.attributes=[colour]"]) == 2
    assert "audit.attributes: 'colour'" in capsys.readouterr().err


def test_contact_sheet(tmp_path, capsys):
    from PIL import Image

    cfg = write_cfg(tmp_path, write={"contact_sheet": True})
    assert main(["run", cfg, "--no-progress"]) == 0
    assert "sheet" in capsys.readouterr().out
    sheet = Image.open(tmp_path / "out" / "contact_sheet.png")
    assert sheet.size == (8 * 128, 2 * (128 + 3 * 11 + 6))  # 10 images in 8 columns: 2 rows
    assert (
        main(["contact-sheet", str(tmp_path / "out"), "-o", str(tmp_path / "s.png"), "--max-images", "3"])
        == 0
    )
    assert Image.open(tmp_path / "s.png").size[0] == 3 * 128
