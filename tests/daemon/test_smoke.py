from rawpeer import RawPeer


def test_raw_echo_roundtrip(netmgr):
    service = RawPeer(netmgr.port).handshake_service("Echo")
    client = RawPeer(netmgr.port).handshake_client()
    reply = client.call("Manager", "link", "Echo")
    assert reply["result"]["attributes"] == {"echo": "(*args, **kwargs)"}
    uid = client.request("Echo", "echo", 1, x=2)
    req = service.serve_one()
    assert req["requester"].startswith("Raw[") and req["uid"] == uid
    assert client.read() == {"error": False, "requester": req["requester"], "result": [[1], {"x": 2}], "uid": uid}


def test_msl_factory_starts(msl_factory):
    mgr = msl_factory()
    peer = RawPeer(mgr.port)
    assert peer.read()["attribute"] == "identity"
