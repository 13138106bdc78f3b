"""The training driver under tf.distribute: two replicas on one machine, two workers on
loopback. Each runs in a fresh process (devices and clusters are fixed at TF start-up)."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
SCRIPT = str(HERE / "run_distributed.py")


def environment(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def result(output: str) -> dict:
    match = re.search(r"RESULT (.*)", output)
    assert match, output[-3000:]
    return dict(item.split("=") for item in match.group(1).split())


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_strategy_trains_on_two_replicas(tmp_path):
    run = subprocess.run([sys.executable, SCRIPT, "mirrored", str(tmp_path / "run")],
                         capture_output=True, text=True, env=environment(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    values = result(run.stdout)
    assert values["replicas"] == "2" and values["iteration"] == "20"
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints"))[0] == "checkpoint"


@pytest.mark.slow
def test_multi_worker_strategy_on_loopback_matches_mirrored(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, SCRIPT, "multi_worker", str(tmp_path / "multi")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=environment(TF_CONFIG=config)))
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        outputs.append(result(out))
    assert [o["chief"] for o in outputs] == ["True", "False"]
    assert outputs[0]["mse"] == outputs[1]["mse"]
    mirrored = subprocess.run([sys.executable, SCRIPT, "mirrored", str(tmp_path / "mirrored")],
                              capture_output=True, text=True, env=environment(), timeout=300)
    # Same windows, same replicas, same arithmetic: the two strategies agree.
    assert abs(float(result(mirrored.stdout)["mse"]) - float(outputs[0]["mse"])) < 1e-5
    saved = sorted(p.name for p in (tmp_path / "multi" / "checkpoints").iterdir())
    assert "ckpt-20.index" in saved
