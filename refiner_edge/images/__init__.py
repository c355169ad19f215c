"""Images: decoding and the official evaluation preprocessing, image sets for calibration and validation, class
labels, and the sample photographs that ship inside scikit-learn."""
