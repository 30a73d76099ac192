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
    publish.add_argument(
        "--allow-no-card", action="store_true", help="publish even without a README.md model card (with a warning)"
    )

    hub = commands.add_parser("hub", help="the local, offline Hub")
    hub_commands = hub.add_subparsers(dest="hub_command", required=True)
    serve = hub_commands.add_parser("serve", help="serve a local Hub on 127.0.0.1")
    serve.add_argument("--store", default=".hfvision/hub", help="directory holding the repos")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="NAME:TOKEN[:ORG1,ORG2]",
        help="a token the hub accepts, for user NAME, who may write to NAME/... and to each ORG/... and read their "
        "private repos (repeatable). Without any, one is generated for local-user (member of org) and printed.",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOSTNAME",
        help="another name clients may reach the hub by (the Host header); any other name is refused",
    )

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
            allow_no_card=args.allow_no_card,
        )
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} {len(files)} files to {args.repo_id}:")
        for name in files:
            print(f"  {name}")
    elif args.command == "hub":
        from hfvision.hub.local_hub import parse_token_spec, serve

        try:
            tokens = dict(parse_token_spec(spec) for spec in args.token) or None
        except ValueError as err:
            parser.error(str(err))
        # prints the variables clients need (and the generated token when none was given)
        serve(args.store, host=args.host, port=args.port, tokens=tokens, allowed_hosts=args.allowed_host)


if __name__ == "__main__":
    main()
