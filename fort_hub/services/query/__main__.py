from ..base import launch
from .app import QueryService

if __name__ == "__main__":
    launch(QueryService)
