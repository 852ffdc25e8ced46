B
stop_logitJEóÞÀ