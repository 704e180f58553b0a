"""Outputs for people: the HTML report, regulatory and analyst exports, the console
day summary and the read-only SQL console. They read the warehouse; none computes margin."""
