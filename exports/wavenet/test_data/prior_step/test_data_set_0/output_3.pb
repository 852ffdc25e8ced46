B
stop_logitJ¾å˜Ào(Á