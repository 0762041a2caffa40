from common.service import run_service
from services.controller.service import main

raise SystemExit(run_service("controller", main))
