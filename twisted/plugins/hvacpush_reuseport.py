# The reuseport: strports endpoint (hvac_push/ops/reuseport.py); no __init__.py in this folder, ever.
from hvac_push.ops.reuseport import ReusePortParser

hvacpushReusePort = ReusePortParser()
