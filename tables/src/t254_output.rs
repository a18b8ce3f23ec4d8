//! "Table 254" (oxsdn's own): what happens at the output port, after the tables chose
//! one, so that every packet a program drops is counted by some rule. OpenFlow never
//! sends a packet back out of the port it came in on; the kernel may refuse to rewrite
//! or redirect a frame, and a translation's new destination may have no way there.

crate::rules! {
    table 254;
    node TO_INGRESS_PORT = 48, priority 100, "output=in_port" => "drop";
    node TRANSLATION_FAILED = 49, priority 50, "ct(nat),nat=failed" => "drop";
    node NOT_SENT = 50, priority 0, "output=failed" => "drop";
    /// At the underlay's XDP hook (`--xdp-decap`): a decision other than a local pod's
    /// veth, untranslated, which `t0_classify::decap_at_xdp` rules out (a service's
    /// reply tracked between its check and table 30's).
    node XDP_NOT_POD = 84, priority 0, "hook=xdp,output=not_pod" => "drop";
}
