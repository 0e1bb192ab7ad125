"""Test-wide guards. The host running the tests must never be kexec'd, rebooted or hypercalled."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite fixtures/golden/ from the current code")


@pytest.fixture(autouse=True)
def never_touch_the_host(monkeypatch):
    """Make every real kexec_load / kexec_file_load / reboot / Xen hypercall fail the test."""

    def forbidden(*args, **kwargs):
        pytest.fail(f"a test reached a real kernel or hypervisor call {args[:1]}: use RecordingBackend", pytrace=True)

    from kexloader.backends import linux

    monkeypatch.setattr(linux, "raw_syscall", forbidden)
    from kexloader import hypercall

    monkeypatch.setattr(hypercall, "raw_hypercall", forbidden)
