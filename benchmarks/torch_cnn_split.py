"""A PyTorch loop of configs/cnn-split-fmnist.toml's first trial shape: the same ConvNet
(conv3x3 32-32-pool-64-64-pool, linear head, PyTorch's default init), split Fashion-MNIST
5 x 2 in class-IL (softmax over the classes seen so far), one epoch per task, batch 128,
SGD with momentum 0.9 and a fresh optimizer per task. Prints each task's mean loss and online
accuracy, to compare how the two implementations behave at a learning rate (argument 1).

    /opt/clef-torch/bin/python benchmarks/torch_cnn_split.py 0.01
"""
import gzip
import sys

import torch
import torch.nn as nn
torch.set_num_threads(2); torch.manual_seed(0)
def idx(p):
    with gzip.open(p) as f: b=f.read()
    if b[3]==3: return torch.frombuffer(bytearray(b[16:]),dtype=torch.uint8).reshape(-1,1,28,28).float()/255
    return torch.frombuffer(bytearray(b[8:]),dtype=torch.uint8).long()
d='/usr/share/datasets/fashion-mnist/'
X=idx(d+'train-images-idx3-ubyte.gz'); Y=idx(d+'train-labels-idx1-ubyte.gz')
lr=float(sys.argv[1])
net=nn.Sequential(nn.Conv2d(1,32,3,padding=1),nn.ReLU(),nn.Conv2d(32,32,3,padding=1),nn.ReLU(),nn.MaxPool2d(2),
    nn.Conv2d(32,64,3,padding=1),nn.ReLU(),nn.Conv2d(64,64,3,padding=1),nn.ReLU(),nn.MaxPool2d(2),nn.Flatten(),nn.Linear(64*7*7,10))
for t in range(5):
    cls=[2*t,2*t+1]; idxs=((Y==cls[0])|(Y==cls[1])).nonzero().flatten()
    opt=torch.optim.SGD(net.parameters(),lr=lr,momentum=0.9)
    mask=torch.full((10,),float('-inf')); mask[:2*t+2]=0
    perm=idxs[torch.randperm(len(idxs))]; losses=[]; correct=0
    for i in range(0,len(perm),128):
        b=perm[i:i+128]; out=net(X[b])+mask
        loss=nn.functional.cross_entropy(out,Y[b]); opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item()); correct+=(out.argmax(1)==Y[b]).sum().item()
    print(t, 'mean loss %.3f online %.3f'%(sum(losses)/len(losses), correct/len(perm)), flush=True)
