"""The Manager daemon: the only package that imports gevent.

A gevent ``StreamServer`` with a ``Pool`` spawns one :class:`~netmgr.daemon.session.Session`
per connection. ``registry`` (who is linked with whom) and ``routing`` (what a received line
means and what must be sent because of it) are pure: they import neither gevent nor sockets and
return effects that ``session`` delivers. ``startup`` turns resolved settings into a running
Manager and is the only module the command line imports from here.

May import: the shared core (``netmgr.protocol``, ``errors``, ``hostinfo``, ``config``,
``crypto``) and ``netmgr.store``; never ``netmgr.client`` or ``netmgr.cli``.
"""


def patch():
    """Make the whole process cooperative: gevent's monkey patching.

    Called by :mod:`netmgr.launcher` before anything imports ``ssl``, ``socket`` or
    ``threading`` (the Manager uses gevent's own classes; patching makes the libraries it
    imports cooperative too: logging handlers, the threadpool, DNS).
    """
    from gevent import monkey

    monkey.patch_all()
