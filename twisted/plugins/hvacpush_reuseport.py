# The reuseport: strports endpoint (hvac_push/reuseport.py); no __init__.py in this folder, ever.
from hvac_push.reuseport import ReusePortParser

hvacpushReusePort = ReusePortParser()
