"""The runner as an inference service: a real bundle served by ``main.py serve`` on a Unix socket
(and on TCP with a token), used through edgedeploy.client, answers as onnxruntime does, in
order, keeps serving others through bad frames and dropped clients, and stops reading a client
that does not read its results."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.runtime.serving import (
    Reference,
    assert_close,
    client_bundle,
    frames,
    served_bundle,
    serving,
)

from edgedeploy.client import Client
from edgedeploy.runtime import wire
from edgedeploy.runtime.wire import FrameRejectedError, ServiceError, ServiceUnavailableError
from edgedeploy.schemas.io import Io

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_stages as ps

pytestmark = pytest.mark.timeout(120)
TOKEN = "s3cret-token-for-the-test-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with served_bundle(tmp_path_factory.mktemp("service")) as pair:
        yield pair


def test_infer_and_stream_answer_as_onnxruntime_does_in_order(served) -> None:
    runner, reference = served
    xs = frames(24, seed=1)
    with Client.unix(runner.socket) as c:
        assert [t.name for t in c.inputs] == [reference.input] and c.window == 4
        assert_close(c.infer(xs[0]), reference(xs[0]))
        named = c.infer(xs[1][0], named=True)  # the batch axis is added
        assert list(named) == [t.name for t in c.outputs]
        first = c._next_index
        seen = []
        for index, outs in c.stream(xs):
            seen.append(index)
            assert_close(outs, reference(xs[index - first]))
        assert seen == list(range(first, first + len(xs)))


def test_a_stream_left_early_leaves_the_connection_in_step(served) -> None:
    runner, reference = served
    xs = frames(10, seed=13)
    with Client.unix(runner.socket) as c:
        stream = c.stream(xs)
        next(stream)
        stream.close()  # the answers still owed are read and dropped
        assert_close(c.infer(xs[3]), reference(xs[3]))


def test_the_socket_is_private_to_the_runners_user(served) -> None:
    runner, _ = served
    mode = os.stat(runner.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_a_bad_frame_gets_an_error_and_the_connection_goes_on(served) -> None:
    runner, reference = served
    x = frames(1, seed=2)[0]
    with Client.unix(runner.socket) as c:
        with pytest.raises(FrameRejectedError, match=r"shape \[1, 3, 16, 16\]"):
            c.infer(np.zeros((1, 3, 16, 16), np.float32))  # refused before it is sent
        sock = c._stream
        for bad in (np.zeros((1, 3, 16, 16), np.float32), x.astype(np.float64)):
            wire.send_parts(sock, wire.tensor_parts(wire.FRAME, c._next_index, [bad]))
            with pytest.raises(FrameRejectedError, match=r"shape|dtype") as info:
                c._answer(c._next_index)
            assert info.value.exit_code == 2
            c._next_index += 1
        assert_close(c.infer(x), reference(x))
    runner.wait_for(lambda s: s["io"]["rejected"] >= 2)


def test_an_oversized_frame_is_refused_before_it_is_read(served) -> None:
    runner, reference = served
    x = frames(1, seed=3)[0]
    with Client.unix(runner.socket) as other, Client.unix(runner.socket) as c:
        head = wire.HEAD.pack(1 << 30, wire.FRAME)  # announces 1 GiB, sends 9 bytes
        c._stream.sendall(head + b"\0" * 8)
        with pytest.raises(FrameRejectedError, match="over the limit") as info:
            c._answer(0)
        assert info.value.code == "too_large"
        assert_close(other.infer(x), reference(x))  # the others are served on


def test_a_client_leaving_mid_stream_takes_nothing_from_another(served) -> None:
    runner, reference = served
    xs = frames(30, seed=4)
    with Client.unix(runner.socket) as steady:
        leaver = Client.unix(runner.socket)
        stream = leaver.stream(xs)
        next(stream)
        leaver.close()  # frames in flight are dropped with their client
        got = list(steady.stream(xs))
    assert [i for i, _ in got] == list(range(30))
    for index, outs in got:
        assert_close(outs, reference(xs[index]))


def test_status_reports_the_service(served) -> None:
    runner, _ = served
    with Client.unix(runner.socket) as c:
        c.infer(frames(1)[0])
        io = runner.wait_for(lambda s: s["io"]["clients"] >= 1 and s["io"]["served"] >= 1)["io"]
    assert io["source"] == "client"
    assert io["listen"] == [f"unix://{runner.socket}"]


def test_tcp_admits_only_the_shared_token_and_never_logs_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    io = Io(listen="tcp://127.0.0.1:0", token_file=str(token_file))
    bundle, model = client_bundle(tmp_path, io)
    with serving(bundle, tmp_path / "state") as runner:
        _, host, port = wire.parse_address(runner.listen("tcp"))
        for token in (None, "wrong-token"):
            with pytest.raises(ServiceUnavailableError, match="refused") as info:
                Client.tcp(host, port, token=token)
            assert info.value.exit_code == 4
        raw = socket.create_connection((host, port))  # a client that never says HELLO
        raw.sendall(wire.tensor_parts(wire.FRAME, 0, [frames(1)[0]])[0])
        assert raw.recv(1 << 16)[4] == wire.ERROR  # refused, no WELCOME, nothing of the model
        raw.close()
        x = frames(1, seed=5)[0]
        with Client.connect(f"tcp://{host}:{port}", token_file=token_file) as c:
            assert_close(c.infer(x), Reference(model)(x))
        with Client.unix(runner.socket) as c:  # the Unix socket needs no token
            c.infer(x)
        runner.wait_for(lambda s: s["io"]["refused"] >= 3)
    log = runner.stop()
    assert "wrong token" in log and "no token" in log and TOKEN not in log


def test_a_tcp_listener_without_a_private_token_file_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    bundle, _ = client_bundle(tmp_path, Io(listen="tcp://127.0.0.1:0",
                                           token_file=str(token_file)))
    with pytest.raises(AssertionError, match=r"exited 2.*readable by other users"), \
            serving(bundle, tmp_path / "state"):
        pass


def test_a_slow_consumer_is_stopped_not_buffered(tmp_path: Path) -> None:
    """A client that sends and never reads: the service stops reading it after ``window``
    unanswered frames, so nothing piles up in the runner; every frame is answered later."""
    from edgedeploy.runtime.pipeline import Pipeline, StageSpec, TensorSpec
    from edgedeploy.runtime.service import Service, ServiceSpec, listen_unix
    from edgedeploy.runtime.service_feed import PipelineFeed

    shape = (1, 1 << 16)  # 256 KiB frames and results: a kernel buffer holds about one
    spec = ServiceSpec("echo", (wire.TensorDesc("x", shape),), (wire.TensorDesc("y", shape),),
                       window=3)
    vec = (TensorSpec(shape),)
    stage = StageSpec(name="echo", cpus=(os.sched_getaffinity(0).pop(),), factory=ps.identity,
                      inputs=vec, outputs=vec)
    service = Service(spec, [listen_unix(tmp_path / "s.sock")], log=lambda _m: None).start()
    stop = threading.Event()
    with Pipeline([stage]) as pipe:
        feed = threading.Thread(target=PipelineFeed(service, pipe).run, kwargs={"stop": stop})
        feed.start()
        try:
            client = Client.unix(tmp_path / "s.sock", window=3)
            client._stream.settimeout(2.0)
            sent = 0
            with pytest.raises(TimeoutError):
                for k in range(200):
                    frame = [np.full(shape, k, np.float32)]
                    wire.send_parts(client._stream, wire.tensor_parts(wire.FRAME, k, frame))
                    sent += 1
            served_then = service.served
            time.sleep(1.0)
            assert service.served == served_then  # stalled, not buffering
            assert sent < 20 and service.served <= spec.window + 4, (sent, service.served)
            client._stream.settimeout(None)
            client._stream.close()  # the half-sent frame cannot be finished: leave
        finally:
            stop.set()
            feed.join(10)
    service.close()
    assert not (tmp_path / "s.sock").exists()


def test_a_full_disk_stops_the_npz_sink_not_the_runner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "out").mkdir(parents=True)
    xs = np.concatenate(frames(5, seed=6))
    np.savez(state / "frames.npz", input=xs)
    (state / "out" / ".000000002.npz.tmp").symlink_to("/dev/full")  # frame 2 hits ENOSPC
    bundle, model = client_bundle(tmp_path, Io(source={"npz": "frames.npz"},
                                               sink={"npz": "out"}))
    with serving(bundle, state, ready="status") as runner:
        assert runner.proc.wait(timeout=90) == 0
    status = runner.status()
    assert status["state"] == "finished" and status["frames"] == 5
    sink = status["io"]["sink"]
    assert sink["state"] == "stopped" and "No space left" in sink["error"]
    assert sink["written"] == 2
    with np.load(state / "out" / "000000001.npz") as npz:
        assert_close([npz["logits"]], Reference(model)(xs[1:2]))


def test_no_runner_is_a_clear_unreachable_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailableError, match="no runner serves") as info:
        Client.unix(tmp_path / "nothing.sock")
    assert info.value.exit_code == 4 and "edgedeploy status" in str(info.value)
    with pytest.raises(ServiceError, match="bad service address"):
        Client.connect("tcp://nohost")


APP = '''
import json, os
import numpy as np

def frames(config):
    xs = np.load(os.environ["HOME"] + "/frames.npy")
    return lambda k: [xs[k % len(xs)]]

def write(config):
    path = os.environ["HOME"] + "/sink.jsonl"
    def sink(index, outputs):
        with open(path, "a") as fh:
            fh.write(json.dumps([index, outputs[0].ravel().tolist()]) + "\\n")
    return sink
'''


def test_a_python_source_and_sink_shipped_in_app_run_on_the_board(tmp_path: Path) -> None:
    (tmp_path / "cam.py").write_text(APP)
    state = tmp_path / "state"
    state.mkdir()
    xs = np.stack(frames(3, seed=12))
    np.save(state / "frames.npy", xs)
    io = Io(source={"python": f"{tmp_path}/cam.py:frames"},
            sink={"python": f"{tmp_path}/cam.py:write"})
    bundle, model = client_bundle(tmp_path, io)
    assert (bundle / "app" / "cam.py").read_text() == APP
    with serving(bundle, state, "--frames", "6", ready="status") as runner:
        assert runner.proc.wait(timeout=90) == 0
    rows = [json.loads(line) for line in (state / "sink.jsonl").read_text().splitlines()]
    assert [index for index, _ in rows] == list(range(6))
    reference = Reference(model)
    for index, values in rows:
        assert_close([np.array(values, np.float32)], [reference(xs[index % 3])[0].ravel()])
