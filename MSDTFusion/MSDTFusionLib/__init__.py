"""MSDTFusionLib: algorithms of the MSDT Fusion module (placeholder).

Fusion will register and combine further data of the same subject (MR with CT, surface scans, EOS
radiographs) with the anatomy twin built by the MSDT module. Nothing is implemented yet.
"""
