"""English display formats, overriding Django's: "2026-11-23 14:05:07", not "Nov. 23, 2026, 2:05 p.m.".

Log lines, setpoints and meter readings are seconds apart; a list that rounds to the minute
hides their order. Input formats stay Django's.
"""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
