"""Serial stream reader end to end through a real pseudo-terminal pair (no hardware)."""

import os
import threading
import time

import numpy as np
import pytest

from MSDTMotionLib.serialstream import SerialStreamReader, TablePump


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    state = {"master": master}
    yield name, state
    for fd in (state["master"], slave):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def write_lines(fd, lines, pause_every=20, pause_s=0.002):
    for number, line in enumerate(lines):
        os.write(fd, (line + "\n").encode())
        if number % pause_every == 0:
            time.sleep(pause_s)


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_all_samples_arrive_in_order(pty_pair, scene):
    port, state = pty_pair
    reader = SerialStreamReader(port, channels=["emg", "acc"], capacity=10_000).start()
    try:
        assert wait_for(lambda: reader.status == "streaming")
        lines = [f"{k % 256},{np.sin(k / 10):.6f},{k * 0.5}" for k in range(1000)]  # wraps at 256 four times
        writer = threading.Thread(target=write_lines, args=(state["master"], lines))
        writer.start()
        pump = TablePump(scene, reader, "Live", max_rows=300)
        deadline = time.monotonic() + 5
        while pump.rows_added < 1000 and time.monotonic() < deadline:
            pump.update()
            time.sleep(0.02)
        writer.join()
        stats = reader.statistics()
        assert stats.received == 1000
        assert stats.dropped == 0 and stats.corrupt == 0 and stats.overrun == 0
        table = pump.table_node
        assert pump.rows_added == 1000
        assert table.GetNumberOfRows() == 300
        sample = np.array([table.GetTable().GetValue(r, 0).ToDouble() for r in range(300)])
        np.testing.assert_array_equal(sample, np.arange(700, 1000))  # unwrapped across the 8-bit wraps
        acc = np.array([table.GetTable().GetValue(r, 3).ToDouble() for r in range(300)])
        np.testing.assert_allclose(acc, np.arange(700, 1000) * 0.5)
        everything = reader.latest()
        np.testing.assert_array_equal(everything["index"], np.arange(1000))
        assert stats.rate_hz >= 0
    finally:
        reader.stop()


def test_garbage_and_gaps_are_counted(pty_pair):
    port, state = pty_pair
    reader = SerialStreamReader(port, channels=2, counter_modulus=65536).start()
    try:
        assert wait_for(lambda: reader.status == "streaming")
        lines = ["0,1.0,2.0", "1,1.1,2.1", "garbage!!", "2,1.2", "3,abc,2.3", "# comment", "",
                 "3,1.3,2.3", "7,1.7,2.7", "65535,9,9", "0,1,1"]
        write_lines(state["master"], lines)
        assert wait_for(lambda: reader.statistics().received == 6)
        stats = reader.statistics()
        assert stats.corrupt == 3
        assert stats.dropped == 1 + 3 + (65535 - 7 - 1)  # 2 (corrupt), 4..6 and 8..65534 lost; 65535 -> 0 wraps
        data = reader.pop_available()
        np.testing.assert_array_equal(data["index"], [0, 1, 3, 7, 65535, 65536])
        np.testing.assert_allclose(data["values"][:, 0], [1.0, 1.1, 1.3, 1.7, 9, 1])
        assert len(reader.pop_available()["index"]) == 0  # nothing new
    finally:
        reader.stop()


def test_port_closing_mid_stream_reports_disconnected(pty_pair):
    port, state = pty_pair
    reader = SerialStreamReader(port, channels=1).start()
    try:
        assert wait_for(lambda: reader.status == "streaming")
        write_lines(state["master"], [f"{k},{k}" for k in range(50)])
        assert wait_for(lambda: reader.statistics().received == 50)
        os.close(state["master"])
        state["master"] = None
        assert wait_for(lambda: reader.status == "disconnected")
        started = time.monotonic()
        data = reader.pop_available()  # never blocks, samples received before stay available
        assert time.monotonic() - started < 0.1
        np.testing.assert_allclose(data["values"][:, 0], np.arange(50))
        assert reader.statistics().status == "disconnected"
    finally:
        reader.stop()
    assert reader.status == "disconnected"


def test_missing_port_reports_disconnected_and_can_retry():
    reader = SerialStreamReader("/dev/does-not-exist-msdt", reconnect=True, reconnect_interval_s=0.05).start()
    try:
        assert wait_for(lambda: reader.status in ("disconnected", "connecting"))
        assert wait_for(lambda: reader.statistics().error != "")
        assert reader.pop_available()["values"].shape[0] == 0
    finally:
        reader.stop()
