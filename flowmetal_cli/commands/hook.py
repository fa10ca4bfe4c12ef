"""`flowmetal hook add | list | rm | test`: webhooks that start or message a deployment's flows.

The secret is read here, from an environment variable or a file, when the hook is added, and
stored in the grid's Flow DB; the grid checks each delivery's signature against it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.client import GridClient
from flowmetal_cli.commands.run import ContextOption
from flowmetal_cli.connect import connect
from grid_local.errors import ArgumentError
from grid_local.triggers import signatures
from grid_local.triggers.webhooks import check_hook_name

hook_app = typer.Typer(help="Webhooks: POST /hooks/NAME starts (or messages) a deployment's flows.",
                       no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SecretEnvOption = Annotated[str | None, typer.Option("--secret-env", metavar="VAR",
                                                     help="Read the shared secret from this environment variable.")]
SecretFileOption = Annotated[Path | None, typer.Option("--secret-file", metavar="FILE", dir_okay=False,
                                                       help="Read the shared secret from this file (trailing newline dropped).")]


def read_secret(secret_env: str | None, secret_file: Path | None) -> tuple[str | None, str]:
    """The secret and where it came from (``env:VAR``, ``file:PATH``), or (None, "") when none is given."""
    if secret_env and secret_file:
        raise ArgumentError("give --secret-env or --secret-file, not both")
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise ArgumentError(f"--secret-env {secret_env}: the environment variable is not set or empty")
        return value, f"env:{secret_env}"
    if secret_file:
        try:
            value = secret_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ArgumentError(f"--secret-file {secret_file}: cannot read it: {exc.strerror or exc}") from None
        if not value:
            raise ArgumentError(f"--secret-file {secret_file}: the file is empty")
        return value, f"file:{secret_file.resolve()}"
    return None, ""


def hook_spec(deployment: str, secret: str | None, source: str, signature: str | None, to: str, inbox: str,
              match: str | None) -> dict[str, Any]:
    """What ``PUT /v1/hooks/NAME`` takes; a signed hook (the default) needs a secret."""
    chosen = signature or ("github" if secret else None)
    if chosen is None:
        raise ArgumentError("a signed hook needs --secret-env VAR or --secret-file FILE "
                            "(or --signature none for an unsigned one)")
    if chosen not in signatures.SCHEMES:
        raise ArgumentError(f"--signature takes {', '.join(signatures.SCHEMES)}, not '{chosen}'")
    if chosen != "none" and not secret:
        raise ArgumentError(f"a {chosen} hook needs --secret-env VAR or --secret-file FILE")
    if to not in ("start", "inbox"):
        raise ArgumentError(f"--to takes start or inbox, not '{to}'")
    return {"deployment": deployment, "signature": chosen, "secret": secret if chosen != "none" else None,
            "secret_source": source if chosen != "none" else "", "to": to, "inbox": inbox, "match": match}


def hook_url(client: GridClient, name: str) -> str:
    return f"{client.url}/hooks/{name}"


@hook_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The hook's name: it is served at /hooks/NAME.", show_default=False)],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="The deployment it starts or messages.", show_default=False)],
    secret_env: SecretEnvOption = None,
    secret_file: SecretFileOption = None,
    signature: Annotated[str | None, typer.Option("--signature", help="github (X-Hub-Signature-256), hmac-sha256 (X-Signature-256) or none. Default: github when a secret is given.")] = None,
    to: Annotated[str, typer.Option("--to", help="start: a new flow per delivery; inbox: a message to running flows.")] = "start",
    inbox: Annotated[str, typer.Option("--inbox", help="With --to inbox: the inbox the request is written to.")] = "_stdin",
    match: Annotated[str | None, typer.Option("--match", metavar="ARG=SOURCE", help="With --to inbox: deliver only to the flows whose argument ARG equals the request's json:PATH, header:NAME or query:NAME.")] = None,
    context: ContextOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add (or replace) a webhook of a deployment.

    Each POST to /hooks/NAME, once its signature checks out, starts a flow of the deployment with
    the request as its `request` argument (--to start), or writes the request to the inbox of its
    running flows (--to inbox). A redelivery with the same X-GitHub-Delivery or Idempotency-Key
    starts nothing and answers the first delivery's flow id. The secret is read now and stored
    in the grid's Flow DB.

    Examples:

      flowmetal hook add gh-push --deployment ci --secret-env GITHUB_WEBHOOK_SECRET

      flowmetal hook add merged --deployment review --to inbox --match pr=json:pull_request.number --secret-file hook.secret

      flowmetal hook add ping --deployment hello --signature none
    """
    with console.edge():
        problem = check_hook_name(name)
        if problem:
            raise ArgumentError(problem)
        secret, source = read_secret(secret_env, secret_file)
        spec = hook_spec(deployment, secret, source, signature, to, inbox, match)
        with connect(context, autostart=True) as client:
            hook = client.put_hook(name, spec)
            url = hook_url(client, name)
    if json_output:
        console.print_json({**hook, "url": url})
        return
    typer.echo(f"hook {name} -> deployment {hook['deployment']} ({hook['to']}, signature {hook['signature']}): "
               f"POST {url}")


@hook_app.command("list")
def list_hooks(context: ContextOption = None, json_output: JsonOption = False) -> None:
    """List the webhooks you can see, with their URLs (never their secrets).

    Examples:

      flowmetal hook list

      flowmetal hook list --json
    """
    with console.edge():
        with connect(context) as client:
            found = [{**h, "url": hook_url(client, h["name"])} for h in client.hooks()]
    if json_output:
        console.print_json(found)
        return
    if not found:
        typer.echo("no hooks (add one with: flowmetal hook add NAME --deployment D --secret-env VAR)")
        return
    width = max(4, *(len(h["name"]) for h in found)) + 2
    dwidth = max(10, *(len(h["deployment"]) for h in found)) + 2
    typer.echo(f"{'NAME':<{width}}{'DEPLOYMENT':<{dwidth}}{'TO':<7}{'SIGNATURE':<13}URL")
    for h in found:
        to = h["to"] if h["to"] == "start" else f"inbox {h['inbox']}"
        typer.echo(f"{h['name']:<{width}}{h['deployment']:<{dwidth}}{to:<7}{h['signature']:<13}{h['url']}")


@hook_app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="The hook to remove.", show_default=False)],
       context: ContextOption = None) -> None:
    """Remove a webhook: POST /hooks/NAME answers 404 from now on.

    Examples:

      flowmetal hook rm gh-push
    """
    with console.edge():
        with connect(context) as client:
            client.delete_hook(name)
    typer.echo(f"removed hook {name}")


def signed_headers(hook: dict[str, Any], secret: str | None, body: bytes, delivery: str,
                   event: str | None) -> dict[str, str]:
    """The headers a real sender puts on ``body`` for this hook."""
    headers = {"Content-Type": "application/json"}
    if hook["signature"] == "github":
        headers["X-GitHub-Delivery"] = delivery
        if event:
            headers["X-GitHub-Event"] = event
    else:
        headers["Idempotency-Key"] = delivery
    if hook["signature"] != "none":
        assert secret is not None
        headers[signatures.HEADERS[hook["signature"]]] = signatures.sign(secret, body)
    return headers


def secret_from_source(source: str) -> str | None:
    """Re-read a hook's secret where ``hook add`` found it (this machine's env var or file)."""
    kind, _, where = source.partition(":")
    if kind == "env":
        return read_secret(where, None)[0]
    if kind == "file":
        return read_secret(None, Path(where))[0]
    return None


@hook_app.command("test")
def test(
    name: Annotated[str, typer.Argument(help="The hook to call.", show_default=False)],
    payload: Annotated[Path, typer.Option("--payload", "-p", exists=True, dir_okay=False, help="The body to send (a JSON file, usually).")],
    secret_env: SecretEnvOption = None,
    secret_file: SecretFileOption = None,
    delivery: Annotated[str | None, typer.Option("--delivery", help="The delivery id (default: a new one). Send the same one twice to see a redelivery start nothing.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="github hooks: the X-GitHub-Event header.")] = None,
    context: ContextOption = None,
    json_output: JsonOption = False,
) -> None:
    """Send a correctly signed request to a hook, as its sender would, and print the flow it started.

    The secret is read again from where `hook add` read it (or from --secret-env/--secret-file).
    Exit code: 0 when the grid accepted it, 4 when it refused the signature, 1 otherwise.

    Examples:

      flowmetal hook test gh-push --payload push.json --event push

      flowmetal hook test gh-push --payload push.json --delivery d-1   # twice: one flow
    """
    with console.edge():
        body = payload.read_bytes()
        with connect(context) as client:
            hook = client.get_hook(name)
            secret, _ = read_secret(secret_env, secret_file)
            if secret is None and hook["signature"] != "none":
                secret = secret_from_source(hook.get("secret_source") or "")
                if secret is None:
                    raise ArgumentError(f"hook {name} is signed: give --secret-env or --secret-file")
            headers = signed_headers(hook, secret, body, delivery or str(uuid.uuid4()), event)
            response = client.post_hook(name, body, headers)
    try:
        answer: Any = response.json()
    except ValueError:
        answer = {"message": response.text}
    if json_output:
        console.print_json({"status": response.status_code, **(answer if isinstance(answer, dict) else {"body": answer})})
    if response.status_code == 202:
        if not json_output:
            again = " (a redelivery: nothing new started)" if answer.get("redelivered") else ""
            typer.echo(f"delivered {answer.get('delivery') or ''} -> flow {', '.join(answer.get('flow_ids') or [])}{again}")
        return
    message = answer.get("message") if isinstance(answer, dict) else None
    code = console.EXIT_REFUSED if response.status_code == 401 else console.EXIT_FAILED
    console.fail(f"hook {name} answered {response.status_code}: {message or response.text}", code)


def register(app: typer.Typer) -> None:
    app.add_typer(hook_app, name="hook")
