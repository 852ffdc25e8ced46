B
stop_logitJ'Œ‡¿≥Ôc¿