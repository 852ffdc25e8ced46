B
stop_logitJ‘ëÞÀ+§¹À