"""Transparent capture (netns mode): the pods' network fabric, the in-pod rules, the node agent and ZDS."""
