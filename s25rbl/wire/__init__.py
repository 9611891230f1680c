"""The DNS message format, by hand, for both directions: the responder's queries and answers
(``message``) and the names both it and the stub resolver encode and skip (``names``)."""
