import json
import os

from lamina.registry.transport import RegistryOptions
from lamina.registry.where import CREDENTIALS_FROM, locations, read_locations, write_locations


def test_written_locations_are_what_the_environment_implies(tmp_path):
    environ = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/home/u/.cfg", "PATH": "/home/u/bin:/usr/bin"}
    path = str(tmp_path / "cache" / "where.json")
    write_locations(path, environ)
    assert read_locations(path) == ("/home/u/.docker/config.json", ("/etc/docker/certs.d", "/home/u/.cfg/docker/certs.d"),
                                    "/home/u/bin:/usr/bin")
    assert json.loads(open(path).read()) == locations(environ)
    assert [p for p in os.listdir(tmp_path / "cache")] == ["where.json"]  # no temporary file left


def test_a_cached_process_reads_them_instead_of_its_own_environment(tmp_path):
    path = str(tmp_path / "where.json")
    write_locations(path, {"DOCKER_CONFIG": "/srv/ci/docker", "LAMINA_CERTS_D": "/srv/certs.d", "PATH": "/opt/helpers"})
    options = RegistryOptions.from_environ({CREDENTIALS_FROM: path, "HOME": "/elsewhere", "PATH": "/usr/bin"})
    assert options.docker_config == "/srv/ci/docker/config.json"
    assert options.certs_d == ("/srv/certs.d",)
    assert options.helper_path == "/opt/helpers"


def test_credential_helpers_are_looked_up_on_the_recorded_path(tmp_path, monkeypatch):
    from lamina.registry.auth import DockerConfig, find_credentials

    helpers = tmp_path / "helpers"
    helpers.mkdir()
    script = helpers / "docker-credential-fake"
    script.write_text('#!/bin/sh\nread url\necho "{\\"Username\\": \\"u\\", \\"Secret\\": \\"s\\"}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the process's own PATH does not hold the helper
    creds = find_credentials(DockerConfig("", creds_store="fake"), "registry.example", str(helpers))
    assert creds is not None and creds.username == "u" and creds.password == "s"


def test_a_missing_or_malformed_file_falls_back_to_the_environment(tmp_path):
    bad = tmp_path / "bad.json"
    for text in ("", "[]", '{"docker_config": 1, "certs_d": []}', '{"docker_config": "x", "certs_d": [1]}',
                 "[" * 100000, '{"docker_config": "x", "certs_d": []}' + " " * (70 << 10)):
        bad.write_text(text)
        assert read_locations(str(bad)) is None, text[:40]
    for path in (str(bad), str(tmp_path / "missing.json")):
        options = RegistryOptions.from_environ({CREDENTIALS_FROM: path, "HOME": "/home/v"})
        assert options.docker_config == "/home/v/.docker/config.json"
