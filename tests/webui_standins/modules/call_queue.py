import threading

# The WebUI's FIFOLock: one generation (or model reload) at a time.
queue_lock = threading.Lock()
