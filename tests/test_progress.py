"""Tests of the dependency-free progress bar (dsatgo_np.progress)."""
import io

import pytest

from dsatgo_np import progress
from dsatgo_np.progress import Progress, format_rate, format_time, format_value, iterate


def test_log_style_prints_a_line_per_tenth():
    out = io.StringIO()  # not a TTY
    with Progress(100, desc="train", unit="batch", file=out) as bar:
        for _ in range(100):
            bar.update(loss=0.31234, acc=0.9412)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("train  10/100 10%|")
    last = lines[-1]
    assert "100/100 100%|####################|" in last
    assert "batch/s" in last and last.endswith("loss=0.312 acc=0.941")


def test_big_steps_print_once_and_close_adds_final_line():
    out = io.StringIO()
    bar = Progress(200, file=out)
    bar.update(110)  # crosses five tenths at once: one line
    assert out.getvalue().count("\n") == 1
    bar.update(10)
    bar.close()  # 120/200 was never printed: close prints it
    bar.close()  # harmless twice
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("120/200 60%")


def test_disable_prints_nothing():
    out = io.StringIO()
    with Progress(10, file=out, disable=True) as bar:
        bar.update(10, loss=1.0)
    assert out.getvalue() == "" and bar.n == 10


def test_tty_redraws_in_place_throttled():
    out = io.StringIO()
    with Progress(1000, desc="x", file=out, tty=True) as bar:
        for _ in range(1000):
            bar.update()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    # first update, the final step and close: far fewer than 1000 redraws
    assert 2 <= text.count("\r") <= 6
    assert "1000/1000 100%" in text.split("\r")[-1]


def test_tty_write_keeps_the_bar():
    out = io.StringIO()
    bar = Progress(4, file=out, tty=True)
    bar.update()
    bar.write("epoch 1 done")
    assert "epoch 1 done\n" in out.getvalue()
    assert out.getvalue().rstrip(" ").endswith("s")  # bar redrawn after the message
    bar.close()


def test_unknown_total_and_iterate():
    out = io.StringIO()
    assert list(iterate((i for i in range(7)), desc="gen", file=out)) == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("gen  7 it")
    out = io.StringIO()
    assert list(iterate([1, 2, 3], file=out, unit="img")) == [1, 2, 3]
    assert "3/3 100%" in out.getvalue().splitlines()[-1] and "img/s" in out.getvalue()


def test_iterate_closes_on_break():
    out = io.StringIO()
    gen = iterate(range(100), file=out)
    for i in gen:
        if i == 4:
            break
    gen.close()
    # item 4 was handed out but its step never finished (as in tqdm)
    assert out.getvalue().splitlines()[-1].startswith("4/100 4%")


def test_default_file_is_stderr(capsys):
    with Progress(2, desc="d") as bar:
        bar.update(2)
    assert "2/2 100%" in capsys.readouterr().err


@pytest.mark.parametrize("seconds,text", [(0, "00:00"), (75.2, "01:15"), (3725, "1:02:05"),
                                          (None, "?"), (float("inf"), "?")])
def test_format_time(seconds, text):
    assert format_time(seconds) == text


def test_format_value_and_rate():
    np = pytest.importorskip("numpy")
    assert format_value(0.31234) == "0.312" and format_value(np.float32(0.5)) == "0.500"
    assert format_value(7) == "7" and format_value(np.int64(3)) == "3"
    assert format_value(2e-5) == "2.00e-05" and format_value("abc") == "abc"
    assert format_rate(3.712, "batch") == "3.71 batch/s"
    assert format_rate(0.4, "batch") == "2.50 s/batch"
    assert format_rate(1234.5, "img") == "1234 img/s"


def test_module_has_no_third_party_imports():
    import ast
    tree = ast.parse(open(progress.__file__).read())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "sys", "time", "typing"}
