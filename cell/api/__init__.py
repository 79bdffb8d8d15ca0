"""The HTTP/WebSocket API and the web HMI (FastAPI).  Transport code: only this package imports
fastapi/uvicorn, and ``import cell`` does not import it (see cell/session.py)."""
