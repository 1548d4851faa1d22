"""Generative families behind one interface (:class:`genbench.models.base.GenerativeModel`)."""
