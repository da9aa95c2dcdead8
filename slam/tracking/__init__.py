"""The tracking thread: frames in, poses out; decides keyframes."""
