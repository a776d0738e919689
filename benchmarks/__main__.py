"""Run every benchmark, each next to its anchors in the same run: ``python -m benchmarks``.

``python -m benchmarks NAME...`` runs only the named ones (decode, throttle, server,
client, collect, proxy, web, archive,
domain). Each prints its own table with ratios; nothing
here asserts a time.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "decode": ("benchmarks.bench_decode", ["bench_decode", "1000000"]),
    "throttle": ("benchmarks.bench_throttle", ["bench_throttle", "200000"]),
    "server": ("benchmarks.bench_server", ["bench_server"]),
    "client": ("benchmarks.bench_client", ["bench_client"]),
    "collect": ("benchmarks.bench_collect", ["bench_collect"]),
    "proxy": ("benchmarks.bench_proxy", ["bench_proxy"]),
    "web": ("benchmarks.bench_web", ["bench_web"]),
    "archive": ("benchmarks.bench_archive", ["bench_archive", "30000"]),
    "domain": ("benchmarks.bench_domain", ["bench_domain", "3"]),
}


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        module_name, argv = BENCHMARKS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            print(f"[{name}] not available yet\n")
            continue
        print(f"[{name}]")
        saved = sys.argv
        sys.argv = argv
        try:
            module.main() if name != "throttle" else module.main(argv)
        finally:
            sys.argv = saved
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
