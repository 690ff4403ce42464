"""Backend → charger: a backend's CALL answered per its command policy.

forward: sent to the charger through its consumer and the charger's answer relayed (transaction
ids mapped); local: a harmless answer from here; refuse: a CALLERROR. Smart charging is never
forwarded: SetChargingProfile is stored as a cap on the local allocation (proxy.caps),
ClearChargingProfile clears stored ones, GetCompositeSchedule answers min(local, backend).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from ocpp.messages import Call, CallError, CallResult

from chargers.frames import CHARGER_INITIATED, SYSTEM_INITIATED, payload_problem, respell_error_code
from evce import clock
from proxy import services
from proxy.models import Policy

if TYPE_CHECKING:
    from proxy.link import LinkRunner, UpstreamChargePoint

logger = logging.getLogger(__name__)


class Refusal(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


# Harmless answers (policy "local"): nothing happens at the charger, the backend is told so.
HARMLESS: dict[str, dict[str, Any]] = {
    "RemoteStartTransaction": {"status": "Rejected"},
    "RemoteStopTransaction": {"status": "Rejected"},
    "Reset": {"status": "Rejected"},
    "UnlockConnector": {"status": "NotSupported"},
    "ChangeAvailability": {"status": "Rejected"},
    "ChangeConfiguration": {"status": "Rejected"},
    "ClearCache": {"status": "Rejected"},
    "SendLocalList": {"status": "NotSupported"},
    "GetLocalListVersion": {"listVersion": -1},  # -1: no local list support (OCPP 1.6 §5.10)
    "UpdateFirmware": {},
    "GetDiagnostics": {},
    "TriggerMessage": {"status": "Rejected"},
    "ReserveNow": {"status": "Rejected"},
    "CancelReservation": {"status": "Rejected"},
    "DataTransfer": {"status": "Rejected"},
    "SetChargingProfile": {"status": "Rejected"},
    "ClearChargingProfile": {"status": "Unknown"},
    "GetCompositeSchedule": {"status": "Rejected"},
}


async def answer_backend_call(link: LinkRunner, cp: UpstreamChargePoint, msg: Call) -> None:
    try:
        payload = await answer(link, str(msg.action), msg.payload if isinstance(msg.payload, dict) else {})
        frame = CallResult(msg.unique_id, payload).to_json()
    except Refusal as refusal:
        frame = CallError(msg.unique_id, refusal.code, refusal.description, {}).to_json()
    except Exception:
        logger.exception("upstream %s: answering %s failed", link.config.backend_name, msg.action)
        frame = CallError(msg.unique_id, "InternalError", "the controller failed to answer", {}).to_json()
    try:
        await cp.send_frame(frame)
    except Exception as error:  # noqa: BLE001 - the connection went: the backend retries or not
        logger.info("upstream %s: answer to %s not sent: %s", link.config.backend_name, msg.action, error)


async def answer(link: LinkRunner, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action not in SYSTEM_INITIATED:
        if action in CHARGER_INITIATED:
            raise Refusal("NotSupported", f"{action} is sent by a charge point, not to it")
        raise Refusal("NotImplemented", f"unknown action {action!r}")
    problem = payload_problem(action, payload)
    if problem is not None:
        raise Refusal(respell_error_code(problem[0]), problem[1])
    policy = link.config.policies.get(action, Policy.REFUSE)
    await link.event(f"{action} from the backend: {policy or 'forward'}")
    if policy == Policy.REFUSE:
        raise Refusal("SecurityError", f"{action} is not allowed to this backend ({link.config.role}) by the "
                                       "controller's command policy")
    if policy == Policy.LOCAL:
        return dict(HARMLESS.get(action, {}))
    handler = SPECIAL.get(action)
    if handler is not None:
        return await handler(link, payload)
    return await forward(link, action, payload)


# A backend's commands reach the charger one at a time (OCPP-J: one outstanding CALL per direction);
# a backend that piles more up than this is refused, so that it cannot crowd out the local loop's calls.
MAX_WAITING_COMMANDS = 3


async def forward(link: LinkRunner, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if link.commands_waiting >= MAX_WAITING_COMMANDS:
        raise Refusal("GenericError", "too many commands waiting for this charge point: one at a time")
    link.commands_waiting += 1
    try:
        async with link.command_lock:
            reply = await link.relay.call(action, payload, link.config.message_timeout_s)
    finally:
        link.commands_waiting -= 1
    status = reply.get("status")
    if status == "ok":
        return dict(reply.get("payload") or {})
    if status == "error":
        raise Refusal(str(reply.get("code") or "GenericError"), str(reply.get("description") or ""))
    if status == "timeout":
        raise Refusal("GenericError", "the charge point did not answer in time")
    if status == "closed":
        raise Refusal("GenericError", "the charge point disconnected before answering")
    raise Refusal("InternalError", str(reply.get("description") or "the call could not be sent"))


async def _remote_stop(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    local = link.local_transaction_id(int(payload["transactionId"]))
    if local is None:
        return {"status": "Rejected"}
    return await forward(link, "RemoteStopTransaction", {"transactionId": local})


async def _remote_start(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    """Forwarded without its profile; the profile is kept as the cap of the transaction it starts."""
    profile = payload.get("chargingProfile")
    if profile is not None and (profile.get("chargingProfilePurpose") != "TxProfile"
                                or profile.get("transactionId") is not None):
        return {"status": "Rejected"}  # OCPP 1.6 §5.11: only a TxProfile without transactionId
    request = {key: value for key, value in payload.items() if key != "chargingProfile"}
    answer = await forward(link, "RemoteStartTransaction", request)
    if profile is not None and answer.get("status") == "Accepted":
        await database_sync_to_async(services.profile_store)(
            link_pk=link.config.link_pk, connector_id=int(payload.get("connectorId") or 0), profile=profile,
            transaction_id=None, awaiting_id_tag=str(payload["idTag"]), now=clock.now())
        link.relay.awaiting_remote_start = True
    return answer


async def _change_configuration(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    """Keys the controller sets itself (admin → automatic configuration keys: heartbeat, sampled
    measurands the loop reads…) stay its own: a backend's change of one is Rejected."""
    managed = await database_sync_to_async(services.managed_configuration_keys)()
    if str(payload["key"]).casefold() in managed:
        await link.event(f"ChangeConfiguration {payload['key']} rejected: managed locally")
        return {"status": "Rejected"}
    return await forward(link, "ChangeConfiguration", payload)


async def _set_profile(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    """Validated as a charger would (OCPP 1.6 §5.16, §3.13), stored, never sent to the charger."""
    connector_id = int(payload["connectorId"])
    profile = dict(payload["csChargingProfiles"])
    purpose = profile["chargingProfilePurpose"]
    if purpose == "ChargePointMaxProfile" and connector_id != 0:
        return {"status": "Rejected"}
    transaction_id = None
    if purpose == "TxProfile":
        if connector_id == 0:
            return {"status": "Rejected"}
        running = await database_sync_to_async(services.active_transaction)(
            charger_pk=link.relay.charger_pk, connector_id=connector_id)
        if running is None:
            return {"status": "Rejected"}  # a TxProfile needs a transaction on the connector
        if profile.get("transactionId") is not None:
            local = link.local_transaction_id(int(profile["transactionId"]))
            if local != running:
                return {"status": "Rejected"}
        transaction_id = running
    periods = (profile.get("chargingSchedule") or {}).get("chargingSchedulePeriod") or []
    if not periods or any(float(p.get("limit", 0)) < 0 for p in periods):
        return {"status": "Rejected"}
    await database_sync_to_async(services.profile_store)(
        link_pk=link.config.link_pk, connector_id=connector_id, profile=profile, transaction_id=transaction_id,
        now=clock.now())
    await link.event(f"{purpose} stored as a cap (connector {connector_id})")
    _rebalance()
    return {"status": "Accepted"}


async def _clear_profile(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    cleared = await database_sync_to_async(services.profiles_clear)(
        link_pk=link.config.link_pk, profile_id=payload.get("id"), connector_id=payload.get("connectorId"),
        purpose=payload.get("chargingProfilePurpose"), stack_level=payload.get("stackLevel"))
    if not cleared:
        return {"status": "Unknown"}
    _rebalance()
    return {"status": "Accepted"}


async def _composite(link: LinkRunner, payload: dict[str, Any]) -> dict[str, Any]:
    from proxy.selectors import composite_schedule  # noqa: PLC0415

    return await database_sync_to_async(composite_schedule)(
        link_pk=link.config.link_pk, charger_pk=link.relay.charger_pk, connector_id=int(payload["connectorId"]),
        duration_s=int(payload["duration"]), unit=payload.get("chargingRateUnit"), now=clock.now())


def _rebalance() -> None:
    """Ask for a re-balance (load management reads the backend's caps); returns at once: the
    request is sent from a thread of its own (loadmgmt.tasks.BackgroundRequest), not from the
    event loop or the database thread, which a slow Redis or broker would hold. Broker down:
    the periodic tick reads the caps anyway."""
    from loadmgmt.tasks import REBALANCE_REQUESTS  # noqa: PLC0415 - load management reads the caps

    REBALANCE_REQUESTS.ask()


SPECIAL = {
    "ChangeConfiguration": _change_configuration,
    "RemoteStopTransaction": _remote_stop,
    "RemoteStartTransaction": _remote_start,
    "SetChargingProfile": _set_profile,
    "ClearChargingProfile": _clear_profile,
    "GetCompositeSchedule": _composite,
}
