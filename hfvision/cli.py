"""The `hfvision` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hfvision", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build, save, reload (Auto classes + remote code) and run a tiny model")
    demo.add_argument("--output-dir", default=None, help="where to write the checkpoint (default: a temp dir)")

    hub = commands.add_parser("hub", help="the local, offline Hub")
    hub_commands = hub.add_subparsers(dest="hub_command", required=True)
    serve = hub_commands.add_parser("serve", help="serve a local Hub on 127.0.0.1")
    serve.add_argument("--store", default=".hfvision/hub", help="directory holding the repos")
    serve.add_argument("--port", type=int, default=8765)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from hfvision.demo import run_demo

        run_demo(args.output_dir)
    elif args.command == "hub":
        from hfvision.hub.local_hub import client_env, serve

        print("Point clients at it with:")
        for name, value in client_env(f"http://127.0.0.1:{args.port}").items():
            print(f"  export {name}={value}")
        serve(args.store, port=args.port)


if __name__ == "__main__":
    main()
