"""Learning from retries (product §5): reports validated, their addresses judged by s25rbl's own
verdict, retries counted by when they arrived, pools suggested by s25rbl's own names, within
per-reporter and per-address limits."""
