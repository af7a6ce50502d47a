from twisted.application.service import ServiceMaker

hvacpush = ServiceMaker(
    "hvac-push", "hvac_push.ops.tap", "Push live HVAC telemetry over WebSocket.", "hvacpush"
)
