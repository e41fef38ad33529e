"""Package data: a byte-for-byte copy of proto/paynow/events/v1/payment_event.proto.

An installed wheel (the container image) has no proto/ directory, and `infra apply`
registers this text as the topic's Pub/Sub schema. A unit test keeps the copy equal
to the original: after changing the .proto, copy it here.
"""
