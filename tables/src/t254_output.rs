//! "Table 254" (oxsdn's own): what happens at the output port, after the tables chose
//! one, so that every packet a program drops is counted by some rule. OpenFlow never
//! sends a packet back out of the port it came in on; the kernel may refuse to rewrite
//! or redirect a frame, and a translation's new destination may have no way there.

crate::rules! {
    table 254;
    node TO_INGRESS_PORT = 48, priority 100, "output=in_port" => "drop";
    node TRANSLATION_FAILED = 49, priority 50, "ct(nat),nat=failed" => "drop";
    node NOT_SENT = 50, priority 0, "output=failed" => "drop";
}
