"""Run one fake provider as its own process (for benchmarks, or an e2e test that wants it out of process):

    python -m tests.fakes anthropic --deltas 10000      # every request gets 10,000 text deltas
    python -m tests.fakes openai --text "Hello there."   # every request gets this answer

Prints ``READY <base_url>`` on stdout, then serves until stdin closes or it is terminated.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from . import FakeAnthropic, FakeBedrock, FakeGemini, FakeOllama, FakeOpenAI, Reply

FAKES = {
    "anthropic": FakeAnthropic,
    "openai": FakeOpenAI,
    "gemini": FakeGemini,
    "ollama": FakeOllama,
    "bedrock": FakeBedrock,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.splitlines()[0])
    parser.add_argument("wire", choices=sorted(FAKES))
    parser.add_argument("--deltas", type=int, help="answer every request with this many text deltas")
    parser.add_argument("--piece", default="tok ", help="the text of each delta with --deltas")
    parser.add_argument("--text", default="Hello from the fake provider.", help="the answer otherwise")
    args = parser.parse_args()
    fake = FAKES[args.wire]().start()
    fake.default = Reply.many_deltas(args.deltas, args.piece) if args.deltas else Reply.text(args.text)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    suffix = "/v1" if args.wire == "openai" else ""
    print(f"READY {fake.base_url}{suffix}", flush=True)
    done.wait()
    fake.stop()


if __name__ == "__main__":
    main()
