"""The `hfvision` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hfvision", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build, save, reload (Auto classes + remote code) and run a tiny model")
    demo.add_argument("--output-dir", default=None, help="where to write the checkpoint (default: a temp dir)")

    publish = commands.add_parser("publish", help="upload a checkpoint (code, safetensors, processor, card) to the Hub")
    publish.add_argument("checkpoint_dir", help="a save_pretrained folder, with README.md as its model card")
    publish.add_argument("repo_id", help="org/name on the endpoint huggingface_hub is configured for (HF_ENDPOINT)")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--revision", default=None, help="branch to upload to (created when missing)")
    publish.add_argument("--commit-message", default=None)
    publish.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")

    hub = commands.add_parser("hub", help="the local, offline Hub")
    hub_commands = hub.add_subparsers(dest="hub_command", required=True)
    serve = hub_commands.add_parser("serve", help="serve a local Hub on 127.0.0.1")
    serve.add_argument("--store", default=".hfvision/hub", help="directory holding the repos")
    serve.add_argument("--port", type=int, default=8765)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from hfvision.demo import run_demo

        run_demo(args.output_dir)
    elif args.command == "publish":
        from hfvision.hub.publish import publish as publish_checkpoint

        files = publish_checkpoint(
            args.checkpoint_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
        )
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} {len(files)} files to {args.repo_id}:")
        for name in files:
            print(f"  {name}")
    elif args.command == "hub":
        from hfvision.hub.local_hub import serve

        serve(args.store, port=args.port)  # prints the variables clients need


if __name__ == "__main__":
    main()
