"""``from netmgr.service import Service, run_services`` keeps working: the Service library is
:mod:`netmgr.client.service`, re-exported here and from :mod:`netmgr`."""
from netmgr.client.service import *  # noqa: F401,F403
from netmgr.client.service import __all__  # noqa: F401
