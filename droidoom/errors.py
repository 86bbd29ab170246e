"""One error hierarchy for droidoom. Every message says what happened and what to do.

DroidoomError
├── UsageError            bad input from the user (CLI exit code 2)
├── TargetError           something went wrong on the device / host being profiled
│   ├── TransientTargetError   worth a retry: device dropped, adb server restarted, timeout
│   └── PermanentTargetError   retrying will not help: no such device, unsupported ABI
│       └── DeviceBusyError    another run holds the device's lock
├── HelperError           the native helper refused or failed (carries its exit code)
├── CaptureError          a capture source (ftrace, perf) could not be armed or parsed
└── DataError             a run directory is missing, partial beyond use, or incompatible
"""

from __future__ import annotations


class DroidoomError(Exception):
    """Base of every error droidoom raises on purpose."""

    exit_code = 1


class UsageError(DroidoomError):
    """The user asked for something invalid; the message says what is allowed."""

    exit_code = 2


class TargetError(DroidoomError):
    """The target (phone or host) could not do what was asked."""


class TransientTargetError(TargetError):
    """A failure that may go away on retry (disconnect, timeout, server restart)."""


class PermanentTargetError(TargetError):
    """A failure that retrying will not fix (unknown serial, unsupported ABI)."""


class DeviceBusyError(PermanentTargetError):
    """Another droidoom run holds the device (see droidoom.run.devlock)."""


class HelperError(DroidoomError):
    """The native helper exited with an error; `code` is its exit status."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class CaptureError(DroidoomError):
    """A capture source could not be armed, collected or parsed."""


class DataError(DroidoomError):
    """Stored results cannot be read or combined."""

    exit_code = 2
