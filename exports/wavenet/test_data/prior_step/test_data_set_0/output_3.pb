B
stop_logitJ™W¤À