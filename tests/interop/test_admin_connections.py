"""An admin read of the connection log sees rows logged an instant before (issue 10, item 8).

netmgr writes connection events in batches, about once a second; 1.0 wrote each at once, and
1.0's own test_admin_requests connects and at once asks for ``connections_table.connections``,
expecting its two rows. The read flushes the pending events first. The same check, quicker than
the whole 1.0 suite (test_msl_suite.py), with a 1.0 client.
"""
from msl.network import connect
from msl.network.database import UsersTable


def test_a_client_reads_its_own_rows_at_once(netmgr_factory, tmp_path):
    db = tmp_path / "users.sqlite3"
    with UsersTable(database=str(db)) as users:
        users.insert("admin", "whatever", True)
    mgr = netmgr_factory("-d", str(db), "--auth-login", "--bcrypt-rounds", "4")
    cxn = connect(host="127.0.0.1", port=mgr.port, disable_tls=True, timeout=30,
                  username="admin", password="whatever")
    try:
        rows = cxn.admin_request("connections_table.connections")
    finally:
        cxn.disconnect()
    assert [row[5] for row in rows if row[4] == cxn.port] == ["new connection request",
                                                               "connected as a client"]
