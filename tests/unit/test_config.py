"""The configuration file and the MVGRAPH_* variables (``mvgraph.commands.configfile``): every
option of the service commands is a setting, precedence, the file's places, one-line errors,
passwords masked. No database: ``mvgraph config show`` runs in-process in a private directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from mvgraph.cli import command
from mvgraph.commands import configfile
from mvgraph.commands.configfile import toml_text, value_type
from mvgraph.errors import UsageError
from tests.conftest import cli

#: The commands run as services today; ``web`` joins them when it is added.
SERVICES = [s for s in configfile.SECTIONS if s in command().commands]


def setting_variables() -> set[str]:
    """Every environment variable that sets a setting, and MVGRAPH_CONFIG."""
    found = configfile.scopes(command())
    names = {configfile.CONFIG_ENV}
    for scope in found:
        for key, param in scope.options.items():
            names.update(configfile.env_names(scope, key, param, found[0].options))
    return names


@pytest.fixture(autouse=True)
def private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private working directory, and no setting's variable from the caller's environment."""
    monkeypatch.chdir(tmp_path)
    for name in setting_variables() | {"DATABASE_URL"}:
        monkeypatch.delenv(name, raising=False)


def show(capsys: pytest.CaptureFixture[str], *before: str) -> tuple[str | None, dict[str, Any]]:
    """``mvgraph [before] config show --json``: the file, and each setting by key."""
    code, out, err = cli(capsys, *before, "config", "show", "--json")
    assert code == 0, err
    data = json.loads(out)
    return data["file"], {s["key"]: s for s in data["settings"]}


def error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one error line of a command that must fail with exit 2."""
    code, _, err = cli(capsys, *(args or ("config", "show")))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix("error: ")


def sample(param: Any, variant: int = 0) -> Any:
    """A value the option takes that is not its default (``variant`` 1: another one)."""
    kind = value_type(param.type)
    choices = getattr(param.type, "choices", None)
    if kind is bool:
        return not param.default if variant == 0 else bool(param.default)
    if choices:
        values = [getattr(c, "value", c) for c in choices]
        return next(v for v in values[variant:] + values if v != param.default)
    if kind is str:
        return f"sample-{variant}"
    low, high = getattr(param.type, "min", None), getattr(param.type, "max", None)
    value = (low or 0) + 2 + variant
    value = value if high is None else min(value, high - variant)
    return value if kind is int else value + 0.5


def env_text(value: Any) -> str:
    return toml_text(value) if isinstance(value, bool) else str(value)


def service_options() -> list[tuple[str, str, Any]]:
    root = command()
    return [(section, key, param) for section in SERVICES
            for key, param in configfile.options(root.commands[section]).items()]


def test_the_service_commands_are_configurable() -> None:
    assert {"daemon", "worker"} <= set(SERVICES)


def test_every_option_of_the_services_is_a_setting_from_the_file_then_the_environment(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    root = command()
    for section in SERVICES:  # every long option but --help, whatever its type
        longs = {o[2:].replace("-", "_") for p in root.commands[section].params
                 if p.param_type_name == "option" for o in p.opts if o.startswith("--")}
        assert set(configfile.options(root.commands[section])) == longs - {"help"}
    found = service_options()
    text = ""
    for section in SERVICES:
        text += f"[{section}]\n" + "".join(f"{key} = {toml_text(sample(param))}\n"
                                           for s, key, param in found if s == section)
    (tmp_path / "mvgraph.toml").write_text(text)

    _, shown = show(capsys)
    for section, key, param in found:
        setting = shown[f"{section}.{key}"]
        assert (setting["value"], setting["kind"]) == (shown_as(key, sample(param)),
                                                       "file"), setting
        assert setting["source"] == str(tmp_path / "mvgraph.toml")

    for _section, _key, param in found:  # each variable overrides the file
        name = param.envvar or "MVGRAPH_DSN"  # a command's --dsn: the global variable
        monkeypatch.setenv(name, env_text(sample(param, 1)))
    _, shown = show(capsys)
    for section, key, param in found:
        setting = shown[f"{section}.{key}"]
        assert setting["value"] == shown_as(key, sample(param, 1)) and \
            sample(param, 1) != sample(param), setting
        assert (setting["kind"], setting["source"]) == ("env", param.envvar or "MVGRAPH_DSN")
        assert setting["env"] in (f"MVGRAPH_{section}_{key}".upper(), "MVGRAPH_DSN",
                                  "MVGRAPH_OWNER_DSN"), setting


def shown_as(key: str, value: Any) -> Any:
    """What ``config show`` prints for a value: a secret (``web.token``) masked."""
    return "***" if configfile.secret(key) else value


def test_help_names_each_settings_variable(capsys: pytest.CaptureFixture[str]) -> None:
    for section in SERVICES:
        code, out, _ = cli(capsys, section, "--help")
        assert code == 0
        flat = " ".join(out.split())
        for s, key, param in service_options():
            if s == section and key != "dsn":
                assert f"env var: {param.envvar}" in flat, key


def test_nothing_set_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    file, shown = show(capsys)
    assert file is None
    assert shown["daemon.workers"] == {"key": "daemon.workers", "value": 1, "kind": "default",
                                       "source": "default", "env": "MVGRAPH_DAEMON_WORKERS"}
    assert shown["daemon.metrics_port"]["value"] is None
    assert shown["worker.owner_dsn"]["env"] == "MVGRAPH_OWNER_DSN"  # the option's own variable
    assert shown["dsn"]["env"] == "MVGRAPH_DSN"
    assert "version" not in shown and "config" not in shown and "help" not in shown
    code, out, _ = cli(capsys, "config", "show")
    assert code == 0 and out.startswith("# no configuration file")
    assert any(line.split() == ["daemon.workers", "=", "1", "#", "default"]
               for line in out.splitlines())


def test_precedence_command_line_environment_file_default(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    (tmp_path / "mvgraph.toml").write_text(
        'dsn = "postgresql://file@db/app"\nsearch_path = "from_file"\n'
        "[daemon]\nworkers = 3\nresync = 5\n")
    monkeypatch.setenv("MVGRAPH_SEARCH_PATH", "from_env")
    monkeypatch.setenv("MVGRAPH_DAEMON_RESYNC", "7.5")
    _, shown = show(capsys, "--search-path", "from_cli")
    assert (shown["dsn"]["value"], shown["dsn"]["kind"]) == ("postgresql://file@db/app", "file")
    assert (shown["search_path"]["value"], shown["search_path"]["kind"]) == ("from_cli",
                                                                             "command line")
    assert (shown["daemon.workers"]["value"], shown["daemon.workers"]["kind"]) == (3, "file")
    assert (shown["daemon.resync"]["value"], shown["daemon.resync"]["source"]) == (
        7.5, "MVGRAPH_DAEMON_RESYNC")
    assert shown["daemon.misfire_grace"]["kind"] == "default"
    _, shown = show(capsys)
    assert (shown["search_path"]["value"], shown["search_path"]["kind"]) == ("from_env", "env")


def test_a_commands_dsn_beats_the_top_level_one_and_yields_to_the_global_option(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    (tmp_path / "mvgraph.toml").write_text(
        'dsn = "dbname=top"\n[daemon]\ndsn = "dbname=daemon"\n')
    _, shown = show(capsys)
    assert shown["daemon.dsn"]["value"] == "dbname=daemon"
    assert (shown["worker.dsn"]["value"], shown["worker.dsn"]["kind"]) == ("dbname=top", "file")
    _, shown = show(capsys, "--dsn", "dbname=cli")
    assert (shown["daemon.dsn"]["value"], shown["daemon.dsn"]["kind"]) == ("dbname=cli",
                                                                           "command line")
    monkeypatch.setenv("MVGRAPH_DSN", "dbname=env")
    _, shown = show(capsys)
    assert (shown["daemon.dsn"]["value"], shown["daemon.dsn"]["source"]) == ("dbname=env",
                                                                             "MVGRAPH_DSN")


def test_config_option_environment_variable_and_pyproject(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "mvgraph.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("[worker]\nconcurrency = 6\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n[tool.mvgraph.worker]\nconcurrency = 2\n')
    file, shown = show(capsys)
    assert file == str(tmp_path / "pyproject.toml") and shown["worker.concurrency"]["value"] == 2
    (tmp_path / "mvgraph.toml").write_text("[worker]\nconcurrency = 3\n")  # before pyproject
    file, shown = show(capsys)
    assert file == str(tmp_path / "mvgraph.toml") and shown["worker.concurrency"]["value"] == 3
    monkeypatch.setenv("MVGRAPH_CONFIG", str(elsewhere))
    file, shown = show(capsys)
    assert file == str(elsewhere) and shown["worker.concurrency"]["value"] == 6
    file, shown = show(capsys, "--config", "pyproject.toml")  # the option beats the variable
    assert file == str(tmp_path / "pyproject.toml") and shown["worker.concurrency"]["value"] == 2
    code, out, _ = cli(capsys, "--config", str(elsewhere), "config", "show")
    assert code == 0 and out.splitlines()[0] == f"# configuration file: {elsewhere} (--config)"


def test_another_tools_pyproject_is_left_alone(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.black\nbroken = ")  # not ours: not read
    file, _ = show(capsys)
    assert file is None
    given = ("--config", "pyproject.toml", "config", "show")
    assert "pyproject.toml: not valid TOML: " in error(capsys, *given)  # given: it is read
    (tmp_path / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    assert error(capsys, *given) == (f"{tmp_path / 'pyproject.toml'} (--config): no "
                                     "[tool.mvgraph] table in it")
    (tmp_path / "pyproject.toml").write_text("tool = 3  # mvgraph\n")
    assert error(capsys, *given).endswith("no [tool.mvgraph] table in it")


@pytest.mark.parametrize(("text", "message"), [
    ("[deamon]\nworkers = 2\n",
     "unknown section [deamon] (did you mean [daemon]?); sections: [daemon], [worker]"),
    ("dns = 'x'\n", "unknown key dns (did you mean dsn?) at the top level; sections:"),
    ("[daemon]\nwrokers = 2\n", "unknown key wrokers in [daemon] (did you mean workers?); "
                                "its keys: workers, misfire_grace,"),
    ("[daemon]\nworkers = -1\n", "[daemon] workers = -1: expected an integer >= 0"),
    ("[daemon]\nworkers = '4'\n", '[daemon] workers = "4": expected an integer >= 0'),
    ("[daemon]\nworkers = 1.5\n", "[daemon] workers = 1.5: expected an integer >= 0"),
    ("[daemon]\nmetrics_port = 70000\n",
     "[daemon] metrics_port = 70000: expected an integer from 0 to 65535"),
    ("[daemon]\nresync = 0.01\n", "[daemon] resync = 0.01: expected a number >= 0.1"),
    ("[daemon]\nlog_json = 'yes'\n", '[daemon] log_json = "yes": expected true or false'),
    ("[worker]\nlease = true\n", "[worker] lease = true: expected a number"),
    ("[worker]\nowner_dsn = 5\n", "[worker] owner_dsn = 5: expected a string"),
    ("daemon = 3\n", "daemon must be a table ([daemon]); its keys: workers,"),
    ("dsn = 5\n", "mvgraph.toml: dsn = 5: expected a string"),
    ("debug = 'yes'\n", 'mvgraph.toml: debug = "yes": expected true or false'),
    ("[daemon.status]\nwithin = 3\n", "unknown key status in [daemon]"),
    ("[daemon]\nworkers = \n", "not valid TOML: "),
])
def test_a_bad_file_is_one_line_naming_file_key_and_what_is_allowed(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "mvgraph.toml").write_text(text)
    line = error(capsys)
    assert line.startswith(f"{tmp_path / 'mvgraph.toml'}: "), line
    assert message in line, line


def test_a_bad_file_stops_every_command(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    (tmp_path / "mvgraph.toml").write_text("[daemon]\nworkers = -1\n")
    for args in (("daemon", "status"), ("graph",), ("worker", "--help")):
        assert error(capsys, *args).endswith("[daemon] workers = -1: expected an integer >= 0")


def test_pyproject_errors_name_its_table(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.mvgraph.deamon]\nworkers = 1\n")
    assert "unknown section [tool.mvgraph.deamon] (did you mean [tool.mvgraph.daemon]?)" in \
        error(capsys)
    (tmp_path / "pyproject.toml").write_text("[tool.mvgraph]\ndns = 1\n")
    assert "unknown key dns (did you mean dsn?) in [tool.mvgraph]" in error(capsys)
    (tmp_path / "pyproject.toml").write_text("[tool.mvgraph]\ndsn = 1\n")
    assert error(capsys).endswith("pyproject.toml: [tool.mvgraph] dsn = 1: expected a string")


def test_a_bad_variable_or_missing_file_is_one_line(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("MVGRAPH_DAEMON_WORKERS", "many")
    assert error(capsys) == ("environment variable MVGRAPH_DAEMON_WORKERS=many: expected an "
                             "integer >= 0 (for mvgraph daemon --workers)")
    monkeypatch.setenv("MVGRAPH_DAEMON_WORKERS", "2")
    monkeypatch.setenv("MVGRAPH_DAEMON_LOG_JSON", "perhaps")
    assert "MVGRAPH_DAEMON_LOG_JSON=perhaps: expected true or false" in error(capsys)
    monkeypatch.delenv("MVGRAPH_DAEMON_LOG_JSON")
    assert error(capsys, "--config", "nowhere.toml", "config", "show") == (
        f"{tmp_path / 'nowhere.toml'} (--config): no such configuration file")
    monkeypatch.setenv("MVGRAPH_CONFIG", str(tmp_path / "gone.toml"))
    assert error(capsys) == f"{tmp_path / 'gone.toml'} (MVGRAPH_CONFIG): no such configuration file"


def test_version_and_root_help_answer_whatever_the_file(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    (tmp_path / "mvgraph.toml").write_text("[nope]\n")
    assert cli(capsys, "--version")[0] == 0
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "--config FILE" in out


def test_config_show_masks_passwords_and_a_readable_file_is_warned_about(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    path = tmp_path / "mvgraph.toml"
    path.write_text('dsn = "postgresql://app:Sesame42@db/app"\n'
                    '[worker]\nowner_dsn = "host=db user={role} password=Sesame43"\n')
    path.chmod(0o600)
    code, out, err = cli(capsys, "config", "show")
    assert code == 0 and err == ""
    assert "Sesame" not in out and 'postgresql://app:***@db/app"' in out
    code, out, _ = cli(capsys, "config", "show", "--json")
    assert "Sesame" not in out and code == 0
    monkeypatch.setenv("MVGRAPH_DSN", "postgresql://app:Sesame44@db/app")
    code, out, _ = cli(capsys, "config", "show")
    assert "Sesame" not in out
    path.chmod(0o644)
    code, _, err = cli(capsys, "config", "show")
    assert code == 0 and "warning:" in err and "every user may read it" in err
    assert "Sesame" not in err


def test_debug_from_the_file_shows_tracebacks(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    (tmp_path / "mvgraph.toml").write_text("debug = true\n")
    missing = str(tmp_path / "none.sql")
    code, _, err = cli(capsys, "graph", "--from-sql", missing)
    assert code == 2 and "Traceback" in err
    code, _, err = cli(capsys, "--config", os.devnull, "graph", "--from-sql", missing)
    assert code == 2 and "Traceback" not in err and "no such file" in err


def test_allowed_values_in_words() -> None:
    root = command()
    daemon = configfile.options(root.commands["daemon"])
    assert configfile.allowed(daemon["workers"]) == "an integer >= 0"
    assert configfile.allowed(daemon["metrics_port"]) == "an integer from 0 to 65535"
    assert configfile.allowed(daemon["misfire_grace"]) == "a number >= 0"
    assert configfile.allowed(daemon["log_json"]) == "true or false"
    assert configfile.allowed(daemon["metrics_host"]) == "a string"
    assert configfile.allowed(configfile.options(root)["search_path"]) == "a string"


def test_the_example_file_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "mvgraph.toml.example"
    assert "/etc/mvgraph/mvgraph.toml" in example.read_text()
    file, shown = show(capsys, "--config", str(example))
    assert file == str(example)
    assert shown["daemon.workers"]["kind"] == "file"


def test_the_documented_example_is_valid(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mvgraph.toml").write_text(block)
    _, shown = show(capsys)
    assert sum(s["kind"] == "file" for s in shown.values()) >= 5


def test_only_the_services_and_the_global_options_get_variables() -> None:
    """``refresh --force`` and the like are no settings: their options keep the variables they
    declare (none)."""
    from mvgraph.cli import app

    plain, attached = typer.main.get_command(app), command()
    for name, cmd in attached.commands.items():
        if name not in SERVICES:
            declared = {p.name: p.envvar for p in plain.commands[name].params}
            assert {p.name: p.envvar for p in cmd.params} == declared, name


def test_a_command_added_later_is_configurable_with_no_code(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """An app wired like mvgraph's (``--config`` calling ``load``, the callback ``settle``) with
    a ``web`` command it has never heard of: file, variable, option and ``config show`` work,
    and a token is masked."""
    from mvgraph.commands.config import config_app

    app = typer.Typer()
    seen: dict[str, Any] = {}

    @app.callback()
    def main(ctx: typer.Context,
             config: Annotated[Path | None, typer.Option(
                 "--config", is_eager=True, callback=configfile.load)] = None,
             dsn: Annotated[str | None, typer.Option("--dsn")] = None) -> None:
        configfile.settle(ctx)

    @app.command("web")
    def web(port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
            host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
            token: Annotated[str | None, typer.Option("--token")] = None,
            dsn: Annotated[str | None, typer.Option("--dsn")] = None) -> None:
        seen.update(port=port, host=host, token=token, dsn=dsn)

    app.add_typer(config_app, name="config")
    root = typer.main.get_command(app)
    (tmp_path / "mvgraph.toml").write_text(
        '[web]\nport = 9000\nhost = "::1"\ntoken = "s3cr3t-t0ken"\ndsn = "dbname=viewer"\n')
    (tmp_path / "mvgraph.toml").chmod(0o600)
    monkeypatch.setenv("MVGRAPH_WEB_HOST", "0.0.0.0")
    root.main(["web"], prog_name="mvgraph", standalone_mode=False)
    assert seen == {"port": 9000, "host": "0.0.0.0", "token": "s3cr3t-t0ken",
                    "dsn": "dbname=viewer"}
    root.main(["web", "--port", "9001"], prog_name="mvgraph", standalone_mode=False)
    assert seen["port"] == 9001
    capsys.readouterr()
    root.main(["config", "show", "--json"], prog_name="mvgraph", standalone_mode=False)
    shown = {s["key"]: s for s in json.loads(capsys.readouterr().out)["settings"]}
    assert shown["web.token"]["value"] == "***" and shown["web.token"]["kind"] == "file"
    assert (shown["web.host"]["value"], shown["web.host"]["env"]) == ("0.0.0.0",
                                                                      "MVGRAPH_WEB_HOST")
    (tmp_path / "mvgraph.toml").write_text("[web]\nport = 0\n")
    with pytest.raises(UsageError, match=r"\[web\] port = 0: expected an integer "
                                                    "from 1 to 65535"):
        root.main(["web"], prog_name="mvgraph", standalone_mode=False)
    (tmp_path / "mvgraph.toml").write_text("[web]\ntoken = 12345678\n")
    with pytest.raises(UsageError, match=r"\[web\] token = \*\*\*: expected a string$"):
        root.main(["web"], prog_name="mvgraph", standalone_mode=False)


def test_only_a_dsn_on_the_command_line_makes_graph_ask_a_server(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The server as the parser of last resort: ``--dsn`` / ``--embedded`` given turn it on,
    ``MVGRAPH_DSN`` and the file's ``dsn`` do not (as before the file existed)."""
    import mvgraph.api
    from mvgraph.errors import MvgraphError

    asked: list[object] = []

    def load_graph(**kw: Any) -> None:
        asked.append(kw.get("resolve_with"))
        raise MvgraphError("stop here")

    monkeypatch.setattr(mvgraph.api, "load_graph", load_graph)
    files = ("graph", "--from-sql", str(tmp_path))
    (tmp_path / "mvgraph.toml").write_text('dsn = "dbname=file"\n')
    cli(capsys, *files)
    monkeypatch.setenv("MVGRAPH_DSN", "dbname=env")
    cli(capsys, *files)
    cli(capsys, "--dsn", "dbname=cli", *files)
    cli(capsys, *files, "--dsn", "dbname=local")
    cli(capsys, *files, "--embedded")
    assert asked == [None, None, "dbname=cli", "dbname=local", "embedded"]
