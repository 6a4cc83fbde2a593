import sys
from pathlib import Path

# Make tests/ importable as a plain directory (for the "kafka_fixture" plugin module).
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["kafka_fixture"]
