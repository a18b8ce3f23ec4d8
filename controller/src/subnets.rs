//! Node subnet allocation in OpenShift order.
