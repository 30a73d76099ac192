"""The `hfvision` command.

Only the standard library is imported at the top: `hfvision --help`, `--version` and argument errors answer at once,
and each subcommand imports what it needs when it runs (the console script enters through `hfvision_cli`, which loads
this file without importing the hfvision package, whose `__init__` registers every model and imports torch).
"""

from __future__ import annotations

import argparse
import os
from importlib import metadata


def _one_line(error: BaseException) -> str:
    """The error's message on one line (Hub errors spread theirs over several: status, reason, URL, hint)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hfvision", description=__doc__.split("\n")[0].strip("."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('hfvision')}")
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

    card = commands.add_parser("card", help="(re)render a checkpoint's README.md model card from its files")
    card.add_argument("checkpoint_dir", help="a save_pretrained folder of an hfvision model, with eval_results.json")
    card.add_argument("--repo-id", default=None, help="the repo id the card names (default: the run's, or local/...)")
    card.add_argument("--output", default=None, help="where to write the card (default: CHECKPOINT_DIR/README.md)")

    publish_metrics = commands.add_parser(
        "publish-metrics", help="upload hfvision's evaluate metrics as Spaces, for evaluate.load('NAMESPACE/name')"
    )
    publish_metrics.add_argument("namespace", help="the user or organisation that owns the metric Spaces")
    publish_metrics.add_argument(
        "--metric", action="append", default=None, help="a metric to publish (repeatable; default: all of them)"
    )
    publish_metrics.add_argument("--private", action="store_true")

    plot = commands.add_parser("plot", help="plot a training run's losses, learning rate and metrics (matplotlib)")
    plot.add_argument("run_dir", help="a run's output folder, with log_history.jsonl or trainer_state.json")
    plot.add_argument("--output", default=None, help="the PNG to write (default: RUN_DIR/training_curves.png)")

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
        from huggingface_hub.errors import HfHubHTTPError

        from hfvision.hub.publish import publish as publish_checkpoint

        try:
            files = publish_checkpoint(
                args.checkpoint_dir,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
                dry_run=args.dry_run,
                allow_no_card=args.allow_no_card,
            )
        except (ValueError, HfHubHTTPError) as err:  # a bad argument or the Hub's refusal: one line, no traceback
            parser.exit(2, f"hfvision publish: error: {_one_line(err)}\n")
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} {len(files)} files to {args.repo_id}:")
        for name in files:
            print(f"  {name}")
    elif args.command == "card":
        from hfvision.hub.card import card_from_checkpoint

        try:
            model_card = card_from_checkpoint(args.checkpoint_dir, model_id=args.repo_id)
        except (ValueError, FileNotFoundError) as err:
            parser.exit(2, f"hfvision card: error: {_one_line(err)}\n")
        output = args.output or os.path.join(args.checkpoint_dir, "README.md")
        model_card.save(output)
        results = len(model_card.data.eval_results or [])
        print(f"wrote {output}: {results} results, pipeline tag {model_card.data.pipeline_tag}")
    elif args.command == "publish-metrics":
        from huggingface_hub.errors import HfHubHTTPError

        from hfvision.hub.publish_metrics import publish_metrics as publish_metric_spaces

        try:
            repo_ids = publish_metric_spaces(args.namespace, args.metric, private=args.private)
        except (ValueError, HfHubHTTPError) as err:
            parser.exit(2, f"hfvision publish-metrics: error: {_one_line(err)}\n")
        print(f"published {len(repo_ids)} metrics; load one with evaluate.load(<repo id>):")
        for repo_id in repo_ids:
            print(f"  {repo_id}")
    elif args.command == "plot":
        from hfvision.plotting import plot_training_curves

        try:
            path = plot_training_curves(args.run_dir, args.output)
        except (ValueError, FileNotFoundError, ImportError) as err:
            parser.exit(2, f"hfvision plot: error: {_one_line(err)}\n")
        print(f"wrote {path}")
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
