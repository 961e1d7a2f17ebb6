"""The error tree: one base class, drawn in the module docstring, messages with the rule."""

from __future__ import annotations

import inspect

import corral
from corral import errors


def test_every_error_derives_from_corral_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, corral.CorralError), name


def test_the_docstring_draws_every_error_class() -> None:
    doc = inspect.getdoc(errors) or ""
    for name in errors.__all__:
        assert f" {name} " in doc or doc.splitlines().count(name) == 1 or f"{name}\n" in doc, name


def test_every_error_is_exported_from_corral() -> None:
    assert set(errors.__all__) <= set(corral.__all__)


def test_call_timeout_is_also_a_timeout_error() -> None:
    assert issubclass(corral.CallTimeout, TimeoutError)
    assert issubclass(corral.MailboxFull, corral.Overloaded)


def test_the_supervisor_answers_are_value_errors_too_as_before_they_had_classes() -> None:
    for cls in (corral.ChildAlreadyStarted, corral.ChildAlreadyPresent, corral.ChildRunning):
        assert issubclass(cls, ValueError)
        assert issubclass(cls, corral.SupervisorError)
