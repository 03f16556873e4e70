"""The commit stage, once per dataset: shipped objects -> load jobs, each exactly once.

- :mod:`.committer`: the rounds (records, jobs, outcomes), :class:`.committer.Committer`;
- :mod:`.commitlog`: the records and the rule that no two overlapping ones are both submitted;
- :mod:`.budget`: the daily load-job budget and the pacing, counted from the log;
- :mod:`.tidy`: archiving what loaded, closing what finished;
- :mod:`.split`: narrowing a rejected object down to its bad rows;
- :mod:`.held`: objects held back in the bucket (list, retry, drop);
- :mod:`.bucket_lease`: one committer per prefix at a time;
- :mod:`.report`: what a commit did.

Nothing here imports a cloud SDK: the warehouse is ``interfaces.LoadJobs``.
"""
