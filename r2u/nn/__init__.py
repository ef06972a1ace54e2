"""The networks: `tf.Module` layers (`layers`), the blocks of the family (`blocks`), one
U-Net skeleton with the block injected (`models`), and the Keras 3 adapter
(`keras_layer`). Imports nothing of r2u but `r2u.config`."""
