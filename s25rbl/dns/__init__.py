"""The DNS responder: transport (UDP/TCP framing) -> wire (parse once) -> handler -> answer bytes."""
