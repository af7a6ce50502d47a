# Run with:  twistd -n -y building.tac   (from this folder)
import os

from twisted.internet import reactor

from embed import make_application

application = make_application(reactor, os.environ.get("BUILDING_LISTEN", "tcp:8080:interface=127.0.0.1"))
